-- Record a step delivery's result. KEYS[1]: the in-flight hash.
-- ARGV: index, owner, record_json, ttl_s, drained-counter prefix of the step's queue,
-- drained-counter ttl_s, and optionally the next step's queue list and message. A new
-- record also counts one step drained from the queue in the current second (for
-- backpressure's drain rate) and pushes the next step's message (the chain goes on with
-- the record that stands, never without it).
-- The first result recorded stands: returns {"recorded"} or {"standing", record}.
local idx = ARGV[1]
local done = redis.call("HGET", KEYS[1], "done:" .. idx)
if done then
  return {"standing", done}
end
redis.call("HSET", KEYS[1], "done:" .. idx, ARGV[3])
if ARGV[7] then
  redis.call("LPUSH", ARGV[7], ARGV[8])
end
local t = redis.call("TIME")
local bucket = ARGV[5] .. t[1]
redis.call("INCR", bucket)
redis.call("EXPIRE", bucket, tonumber(ARGV[6]))
local claim = redis.call("HGET", KEYS[1], "claim:" .. idx)
if claim and string.sub(claim, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. "|" then
  redis.call("HDEL", KEYS[1], "claim:" .. idx)
end
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[4]))
return {"recorded"}
