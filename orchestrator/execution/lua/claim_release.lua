-- Drop a claim if ARGV[2] still holds it (a delivery giving up before a retry).
-- KEYS[1]: the in-flight hash. ARGV: index, owner.
local claim = redis.call("HGET", KEYS[1], "claim:" .. ARGV[1])
if claim and string.sub(claim, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. "|" then
  return redis.call("HDEL", KEYS[1], "claim:" .. ARGV[1])
end
return 0
