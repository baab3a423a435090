-- Who publishes an invocation's chain. KEYS[1]: the in-flight hash.
-- ARGV: mode ("claim" | "done"), ttl_s, stale_ms.
-- claim: returns 1 when the caller should publish: nobody has, or a publisher started
-- more than stale_ms ago and never said it was done (it died between insert and publish).
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == "done" then
  redis.call("HSET", KEYS[1], "dispatch", "done")
  redis.call("EXPIRE", KEYS[1], tonumber(ARGV[2]))
  return 1
end
local state = redis.call("HGET", KEYS[1], "dispatch")
if state == "done" then
  return 0
end
if state and now - tonumber(state) < tonumber(ARGV[3]) then
  return 0
end
redis.call("HSET", KEYS[1], "dispatch", tostring(now))
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[2]))
return 1
