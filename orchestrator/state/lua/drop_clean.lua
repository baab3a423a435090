-- Drop a cached record only if it is clean (persisted): resharding never drops a write.
-- KEYS: 1 shard's dirty index, 2 record hash, 3 shard's quarantine hash.
-- ARGV: 1 the record's state key. Returns 1 dropped, 0 kept (dirty, or quarantined:
-- never persisted either).
if redis.call("ZSCORE", KEYS[1], KEYS[2]) or redis.call("HEXISTS", KEYS[3], ARGV[1]) == 1 then
  return 0
end
return redis.call("DEL", KEYS[2])
