-- bench_state's "redis CAS floor": the least a compare-and-set on a version can do in
-- Redis (no epoch, no dirty index, no flusher). KEYS: 1 hash. ARGV: 1 expected version,
-- 2 new value. Returns 1 written, 0 refused (the version moved).
local current = tonumber(redis.call("HGET", KEYS[1], "ver")) or 0
if current ~= tonumber(ARGV[1]) then
  return 0
end
redis.call("HSET", KEYS[1], "v", ARGV[2], "ver", current + 1)
return 1
