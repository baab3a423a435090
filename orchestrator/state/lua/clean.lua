-- After a flush: mark records clean if they still hold the flushed version.
-- KEYS: 1 shard's dirty index, 2 lag samples list, then the record hashes.
-- ARGV: 1 clean ttl s, 2 samples kept, 3 ms when the flush read the records, then the
-- flushed versions (in KEYS order from KEYS[3]).
-- Every flushed record gives a lag sample (now - when it first became dirty). A record
-- written again since the read stays dirty, but only from the read on: what it held
-- then is persisted.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local read_at = tonumber(ARGV[3])
local cleaned = 0
local lags = {}
for i = 3, #KEYS do
  local since = redis.call("ZSCORE", KEYS[1], KEYS[i])
  if since then
    lags[#lags + 1] = tostring(now - tonumber(since))
    local ver = redis.call("HGET", KEYS[i], "ver")
    if ver and tonumber(ver) == tonumber(ARGV[i + 1]) then
      redis.call("ZREM", KEYS[1], KEYS[i])
      redis.call("EXPIRE", KEYS[i], tonumber(ARGV[1]))
      cleaned = cleaned + 1
    else
      redis.call("ZADD", KEYS[1], "XX", read_at, KEYS[i])
    end
  end
end
if #lags > 0 then
  redis.call("LPUSH", KEYS[2], unpack(lags))
  redis.call("LTRIM", KEYS[2], 0, tonumber(ARGV[2]) - 1)
end
return cleaned
