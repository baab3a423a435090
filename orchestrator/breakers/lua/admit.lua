-- May a call go through? KEYS: 1 state hash, 2 probe lease, 3 names set.
-- ARGV: 1 reset timeout ms, 2 probe lease ms, 3 owner, 4 breaker name.
-- Returns {"closed"} | {"probe", transition} | {"open", ms until a probe may go}.
-- transition is "half-open" when this call moved the breaker there, else "".
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("SADD", KEYS[3], ARGV[4])
local state = redis.call("HGET", KEYS[1], "state") or "closed"
if state == "closed" then
  return {"closed"}
end
if redis.call("HGET", KEYS[1], "forced") == "1" then
  return {"open", "-1"}
end
local opened = tonumber(redis.call("HGET", KEYS[1], "opened_at") or "0")
local due = opened + tonumber(ARGV[1])
if now < due then
  return {"open", tostring(due - now)}
end
-- Past the reset timeout: exactly one caller in the fleet becomes the probe.
if redis.call("SET", KEYS[2], ARGV[3], "NX", "PX", tonumber(ARGV[2])) then
  local transition = ""
  if state ~= "half-open" then
    redis.call("HSET", KEYS[1], "state", "half-open")
    transition = "half-open"
  end
  return {"probe", transition}
end
return {"open", tostring(redis.call("PTTL", KEYS[2]))}
