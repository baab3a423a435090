-- Cache a record loaded from PostgreSQL, unless the cache already has one (which is
-- then at least as new, or stale and checked before use). KEYS: 1 record hash.
-- ARGV: 1 value JSON ("" for absent), 2 version (0 for absent), 3 clean ttl seconds.
-- The copy is stamped with this server's epoch (see put.lua): it is PostgreSQL's.
local epoch = string.sub(string.match(redis.call("INFO", "server"), "run_id:(%x+)"), 1, 16)
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
redis.call("HSET", KEYS[1], "v", ARGV[1], "ver", ARGV[2], "ep", epoch)
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[3]))
return 1
