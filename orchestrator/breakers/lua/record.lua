-- Record one call's outcome. KEYS: 1 state hash, 2 window list, 3 probe lease.
-- ARGV: 1 outcome ("ok" | "fail"), 2 was this the probe ("1" | "0"), 3 owner,
--       4 window size, 5 minimum volume, 6 failure-rate threshold (0..1).
-- Returns {transition, failures, calls}: transition "open" or "closed" when this
-- outcome moved the breaker there (the caller then reports it, once for the fleet).
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ok = ARGV[1] == "ok"
local state = redis.call("HGET", KEYS[1], "state") or "closed"

if ARGV[2] == "1" then
  if redis.call("GET", KEYS[3]) == ARGV[3] then
    redis.call("DEL", KEYS[3])
  end
  if state ~= "half-open" then
    return {"", "0", "0"}
  end
  if ok then
    redis.call("HSET", KEYS[1], "state", "closed")
    redis.call("DEL", KEYS[2])
    return {"closed", "0", "0"}
  end
  redis.call("HSET", KEYS[1], "state", "open", "opened_at", tostring(now))
  return {"open", "1", "1"}
end

if state ~= "closed" then
  -- A call admitted just before the breaker opened: its outcome changes nothing.
  return {"", "0", "0"}
end
redis.call("LPUSH", KEYS[2], ok and "0" or "1")
redis.call("LTRIM", KEYS[2], 0, tonumber(ARGV[4]) - 1)
local outcomes = redis.call("LRANGE", KEYS[2], 0, -1)
local failures = 0
for _, v in ipairs(outcomes) do
  if v == "1" then failures = failures + 1 end
end
local calls = #outcomes
if not ok and calls >= tonumber(ARGV[5]) and failures / calls >= tonumber(ARGV[6]) then
  redis.call("HSET", KEYS[1], "state", "open", "opened_at", tostring(now), "forced", "0")
  redis.call("DEL", KEYS[2])
  return {"open", tostring(failures), tostring(calls)}
end
return {"", tostring(failures), tostring(calls)}
