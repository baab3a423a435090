-- Set aside a record PostgreSQL refused, if it still holds the refused version.
-- KEYS: 1 shard's dirty index, 2 quarantine hash, 3 record hash.
-- ARGV: 1 refused version (as read: compared as text, whatever it holds), 2 state key,
-- 3 reason.
-- A record written again since the flush read it stays dirty: its new value may be
-- fine, and it is an acknowledged write the next round must try.
local ver = redis.call("HGET", KEYS[3], "ver")
if ver ~= ARGV[1] then
  return 0
end
redis.call("HSET", KEYS[2], ARGV[2], ARGV[3])
redis.call("ZREM", KEYS[1], KEYS[3])
redis.call("PERSIST", KEYS[3])
return 1
