-- After a flush: mark records clean if they still hold the flushed version.
-- KEYS: 1 shard's dirty index, 2 lag samples list, then the record hashes.
-- ARGV: 1 clean ttl s, 2 samples kept, then the flushed versions (same order).
-- Returns how many became clean. A record written again since stays dirty.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cleaned = 0
for i = 3, #KEYS do
  local ver = redis.call("HGET", KEYS[i], "ver")
  if ver and tonumber(ver) == tonumber(ARGV[i]) then
    local since = redis.call("ZSCORE", KEYS[1], KEYS[i])
    if since then
      redis.call("LPUSH", KEYS[2], tostring(now - tonumber(since)))
    end
    redis.call("ZREM", KEYS[1], KEYS[i])
    redis.call("EXPIRE", KEYS[i], tonumber(ARGV[1]))
    cleaned = cleaned + 1
  end
end
redis.call("LTRIM", KEYS[2], 0, tonumber(ARGV[2]) - 1)
return cleaned
