-- Drop a cached record only if it is clean (persisted): resharding never drops a write.
-- KEYS: 1 shard's dirty index, 2 record hash. Returns 1 dropped, 0 kept (dirty).
if redis.call("ZSCORE", KEYS[1], KEYS[2]) then
  return 0
end
return redis.call("DEL", KEYS[2])
