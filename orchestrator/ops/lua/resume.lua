-- Resume a queue, atomically: parked messages back ahead of the newer ones, the pause
-- lifted, the time of the resume noted (for the reconciler).
-- KEYS[1]: parked list, KEYS[2]: the queue, KEYS[3]: pauses hash, KEYS[4]: resumed hash.
-- ARGV[1]: the queue's name. Returns {messages put back, 1 if it was paused else 0}.
-- The parked list holds its oldest message at the right; taking from its left and
-- pushing to the queue's right leaves the oldest parked message rightmost, where the
-- workers pop next.
local moved = 0
while true do
  local message = redis.call("LPOP", KEYS[1])
  if not message then break end
  redis.call("RPUSH", KEYS[2], message)
  moved = moved + 1
end
local was_paused = redis.call("HDEL", KEYS[3], ARGV[1])
local now = redis.call("TIME")
redis.call("HSET", KEYS[4], ARGV[1], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
return {moved, was_paused}
