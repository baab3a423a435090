-- Compare-and-set a write-back record. KEYS: 1 record hash, 2 shard's dirty index.
-- ARGV: 1 expected version, 2 new value JSON, 3 dirty limit, 4 (optional) expected value
-- JSON, compared byte for byte as well: an update sends the value its new one was made
-- from, so a write built on a remembered record goes in only if the record still holds it.
-- Returns {"ok", new version} | {"conflict", cached version, cached value} (the retry's
-- basis: no read needed) | {"miss"} (not cached: load it from PostgreSQL first) |
-- {"full", dirty count} (too much unflushed: refuse) |
-- {"stale", version, value, its epoch, this server's epoch} (the record was cached by
-- another server, or before a restart: it may be older than PostgreSQL, so it is checked
-- there before any write builds on it).
-- A record's epoch ("ep") is the run_id (first 16 hex digits) of the server it was
-- validated on. Redis draws a new run_id at every start and each replica has its own, so
-- data that comes back from an AOF, an RDB or a promoted replica carries an old one.
-- The epoch check asks the server its run_id (INFO), which is most of this script's
-- cost. A client that learned the run_id on its own connection, when it connected,
-- sends a copy of this script with that epoch in place of SERVER's false: on the server
-- it was learned from, a record of that epoch needs no INFO. The copy is only ever
-- loaded by an EVAL over that connection, and Redis replicates and persists what a
-- script did, not the script, so on any other server (a restart, a promoted replica)
-- the copy is unknown (NOSCRIPT) until a connection to it sends its own
-- (orchestrator/state/wire.py).
local SERVER = false
-- A conflict writes nothing, so it is answered before the epoch is looked up (INFO is
-- most of this script's cost, and a hot key's writers mostly conflict): the record it
-- reports may be stale. A caller that trusts it reads it checked first; an update need
-- not, as its next compare-and-set checks the epoch.
local record = redis.call("HMGET", KEYS[1], "v", "ver", "ep")
if not record[2] then
  return {"miss"}
end
local current = tonumber(record[2])
if current ~= tonumber(ARGV[1]) or (ARGV[4] and (record[1] or "") ~= ARGV[4]) then
  return {"conflict", tostring(current), record[1] or ""}
end
-- A plain find of "run_id:<the record's epoch>" in INFO is the check; the epoch is
-- parsed out only for a stale record. A copy of this script bound to a server (SERVER
-- set to its epoch, see orchestrator.state.wire) skips INFO for a record of that epoch.
if not SERVER or record[3] ~= SERVER then
  local info = redis.call("INFO", "server")
  if not record[3] or #record[3] ~= 16 or not string.find(info, "run_id:" .. record[3], 1, true) then
    local epoch = string.sub(string.match(info, "run_id:(%x+)"), 1, 16)
    return {"stale", record[2], record[1] or "", record[3] or "", epoch}
  end
end
-- A dirty record has no expiry (only a clean one is given one, when it is marked
-- clean), so a record already dirty needs only its new value.
if redis.call("ZSCORE", KEYS[2], KEYS[1]) then
  redis.call("HSET", KEYS[1], "v", ARGV[2], "ver", current + 1)
  return {"ok", tostring(current + 1)}
end
local dirty = redis.call("ZCARD", KEYS[2])
if dirty >= tonumber(ARGV[3]) then
  return {"full", tostring(dirty)}
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("HSET", KEYS[1], "v", ARGV[2], "ver", current + 1)
redis.call("PERSIST", KEYS[1])
redis.call("ZADD", KEYS[2], now, KEYS[1])
return {"ok", tostring(current + 1)}
