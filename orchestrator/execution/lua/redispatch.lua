-- Count a re-dispatch of a stalled invocation. KEYS[1]: its in-flight hash.
-- ARGV: ttl_s. Stores "count|now_ms" (Redis time); returns the new count.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = redis.call("HGET", KEYS[1], "redispatched")
local count = 0
if found then
  count = tonumber(string.sub(found, 1, string.find(found, "|", 1, true) - 1))
end
count = count + 1
redis.call("HSET", KEYS[1], "redispatched", tostring(count) .. "|" .. tostring(now))
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[1]))
return count
