-- Compare-and-set a write-back record. KEYS: 1 record hash, 2 shard's dirty index.
-- ARGV: 1 expected version, 2 new value JSON, 3 dirty limit.
-- Returns {"ok", new version} | {"conflict", current version} | {"miss"} (not cached:
-- load it from PostgreSQL first) | {"full", dirty count} (too much unflushed: refuse).
local exists = redis.call("EXISTS", KEYS[1]) == 1
if not exists then
  return {"miss"}
end
local current = tonumber(redis.call("HGET", KEYS[1], "ver") or "0")
if current ~= tonumber(ARGV[1]) then
  return {"conflict", tostring(current)}
end
local already_dirty = redis.call("ZSCORE", KEYS[2], KEYS[1])
if not already_dirty then
  local dirty = redis.call("ZCARD", KEYS[2])
  if dirty >= tonumber(ARGV[3]) then
    return {"full", tostring(dirty)}
  end
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("HSET", KEYS[1], "v", ARGV[2], "ver", current + 1)
redis.call("PERSIST", KEYS[1])
if not already_dirty then
  redis.call("ZADD", KEYS[2], now, KEYS[1])
end
return {"ok", tostring(current + 1)}
