-- Bring a cached record in line with PostgreSQL's row, if it still holds what the
-- caller compared (version, value and epoch as read; else "moved": read it again).
-- KEYS: 1 record hash, 2 shard's dirty index, 3 conflicts hash.
-- ARGV: 1 version read, 2 value read, 3 epoch read, 4 PostgreSQL's value JSON ("" for
-- no row), 5 PostgreSQL's version (0 for no row), 6 "1" if both hold the same value,
-- 7 clean ttl seconds, 8 state key.
-- Returns the outcome:
-- "kept": the cache is as new as PostgreSQL (same version and value) or newer (writes
--   that never reached PostgreSQL): it is stamped with this server's epoch, and a newer
--   one is marked dirty so PostgreSQL gets it;
-- "adopted": the cache is older and was validated on another server (a restart, a
--   restore, a failover): PostgreSQL's row descends from it, so it replaces it;
-- "conflict": PostgreSQL holds the same version with another value, or a newer version
--   of a record this server validated: two histories, both acknowledged. PostgreSQL's
--   row replaces the record, whose own version is kept in the conflicts hash (state key
--   -> JSON {version, value, postgres_version, at_ms}) for an operator.
local epoch = string.sub(string.match(redis.call("INFO", "server"), "run_id:(%x+)"), 1, 16)
local record = redis.call("HMGET", KEYS[1], "v", "ver", "ep")
if not record[2] or record[2] ~= ARGV[1] or (record[1] or "") ~= ARGV[2]
    or (record[3] or "") ~= ARGV[3] then
  return "moved"
end
local cached, stored = tonumber(record[2]), tonumber(ARGV[5])
if cached > stored or (cached == stored and ARGV[6] == "1") then
  redis.call("HSET", KEYS[1], "ep", epoch)
  if cached > stored and not redis.call("ZSCORE", KEYS[2], KEYS[1]) then
    local t = redis.call("TIME")
    redis.call("ZADD", KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
               KEYS[1])
    redis.call("PERSIST", KEYS[1])
  end
  return "kept"
end
local outcome = "adopted"
if cached == stored or record[3] == epoch then
  outcome = "conflict"
  local t = redis.call("TIME")
  local value = ARGV[2]
  if value == "" then
    value = "null"
  end
  redis.call("HSET", KEYS[3], ARGV[8], '{"version":' .. record[2] .. ',"value":' .. value
             .. ',"postgres_version":' .. ARGV[5] .. ',"at_ms":'
             .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) .. '}')
end
redis.call("HSET", KEYS[1], "v", ARGV[4], "ver", ARGV[5], "ep", epoch)
redis.call("ZREM", KEYS[2], KEYS[1])
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[7]))
return outcome
