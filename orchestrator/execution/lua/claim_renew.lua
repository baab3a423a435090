-- Renew the claims a process still holds, all in one round trip (the heartbeat).
-- KEYS: in-flight hashes, one per claim. ARGV: lease_ms, then per key: index, owner.
-- Returns one flag per key: 1 renewed, 0 no longer held by that owner (finished, or
-- taken over after the lease ran out).
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = tostring(now + tonumber(ARGV[1]))
local renewed = {}
for i, key in ipairs(KEYS) do
  local idx = ARGV[2 * i]
  local owner = ARGV[2 * i + 1]
  local field = "claim:" .. idx
  local claim = redis.call("HGET", key, field)
  if claim and string.sub(claim, 1, string.len(owner) + 1) == owner .. "|" then
    redis.call("HSET", key, field, owner .. "|" .. until_ms)
    renewed[i] = 1
  else
    renewed[i] = 0
  end
end
return renewed
