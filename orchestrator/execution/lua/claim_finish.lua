-- Record a step delivery's result. KEYS[1]: the in-flight hash.
-- ARGV: index, owner, record_json, ttl_s, drained-counter prefix of the step's queue,
-- drained-counter ttl_s. A new record also counts one step drained from the queue in
-- the current second (for backpressure's drain rate).
-- The first result recorded stands: returns {"recorded", record} or {"standing", record}.
local idx = ARGV[1]
local done = redis.call("HGET", KEYS[1], "done:" .. idx)
if done then
  return {"standing", done}
end
redis.call("HSET", KEYS[1], "done:" .. idx, ARGV[3])
local t = redis.call("TIME")
local bucket = ARGV[5] .. t[1]
redis.call("INCR", bucket)
redis.call("EXPIRE", bucket, tonumber(ARGV[6]))
local claim = redis.call("HGET", KEYS[1], "claim:" .. idx)
if claim and string.sub(claim, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. "|" then
  redis.call("HDEL", KEYS[1], "claim:" .. idx)
end
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[4]))
return {"recorded", ARGV[3]}
