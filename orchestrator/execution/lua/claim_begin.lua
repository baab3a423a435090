-- Begin a step delivery. KEYS[1]: the invocation's in-flight hash.
-- ARGV: index, owner, lease_ms, ttl_s, steal (the dead owner we may replace, or ""),
--       with_records ("1": also return every done record, for a step that ends the run).
-- Returns {"cancelled", reason} | {"done", output_json} | {"busy", owner, remaining_ms}
--       | {"claimed", previous, now_ms, deaths, [done_field, record_json]...}
-- where previous is the owner of an expired or stolen claim ("" when the step is fresh),
-- now_ms is Redis TIME, the clock of step timestamps, and deaths counts the deliveries
-- of this step that died holding it (each takeover of a claim left behind adds one).
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = ARGV[1]
local cancelled = redis.call("HGET", KEYS[1], "cancelled")
if cancelled then
  return {"cancelled", cancelled}
end
local done = redis.call("HGET", KEYS[1], "done:" .. idx)
if done then
  return {"done", done}
end
local previous = ""
local claim = redis.call("HGET", KEYS[1], "claim:" .. idx)
if claim then
  local sep = string.find(claim, "|", 1, true)
  local holder = string.sub(claim, 1, sep - 1)
  local expires = tonumber(string.sub(claim, sep + 1))
  if expires > now and holder ~= ARGV[5] then
    return {"busy", holder, tostring(expires - now)}
  end
  previous = holder
end
local deaths = 0
if previous ~= "" then
  deaths = redis.call("HINCRBY", KEYS[1], "deaths:" .. idx, 1)
end
redis.call("HSET", KEYS[1], "claim:" .. idx, ARGV[2] .. "|" .. tostring(now + tonumber(ARGV[3])),
           "started:" .. idx, tostring(now))
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[4]))
local reply = {"claimed", previous, tostring(now), tostring(deaths)}
if ARGV[6] == "1" then
  local all = redis.call("HGETALL", KEYS[1])
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 5) == "done:" then
      reply[#reply + 1] = all[i]
      reply[#reply + 1] = all[i + 1]
    end
  end
end
return reply
