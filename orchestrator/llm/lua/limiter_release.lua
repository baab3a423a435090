-- End a lease and settle its tokens to what the provider reported; wake the next waiter.
-- KEYS: 1 leases, 2 tokens (hash), 3 token sum, 4 waiters, 5 wake prefix (string prefix),
--       6 the key's probe lease, 7 requests (zset lease->ms it counts from), 8 cooldown
-- ARGV: 1 lease id, 2 actual tokens (-1: keep the reservation)
-- The request counts in the minute from its completion too (it stays in the window until
-- completion + window): a provider that counts it later than our admission, or on a
-- clock behind ours, still sees no more than its limit.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("ZADD", KEYS[7], "XX", now, ARGV[1])
redis.call("ZREM", KEYS[1], ARGV[1])
local actual = tonumber(ARGV[2])
if actual >= 0 then
  local reserved = redis.call("HGET", KEYS[2], ARGV[1])
  -- Absent when the request already left the window: nothing left to settle.
  if reserved then
    redis.call("HSET", KEYS[2], ARGV[1], actual)
    redis.call("INCRBY", KEYS[3], actual - tonumber(reserved))
  end
end
-- A probe that neither brought its key back nor sent it back (a 429, a 5xx): the key
-- stays due, and the next call in line probes it.
if redis.call("GET", KEYS[6]) == ARGV[1] then
  redis.call("DEL", KEYS[6])
  -- A probe after a 429 that got an answer: the provider's window has room again.
  if actual >= 0 then
    local cooled, flag = string.match(redis.call("GET", KEYS[8]) or "", "^(%d+)(|p)$")
    if flag and tonumber(cooled) <= now then redis.call("DEL", KEYS[8]) end
  end
end
local head = redis.call("ZRANGE", KEYS[4], 0, 0)
if head[1] then
  local wake = KEYS[5] .. head[1]
  redis.call("LPUSH", wake, "1")
  redis.call("PEXPIRE", wake, 10000)
end
return 1
