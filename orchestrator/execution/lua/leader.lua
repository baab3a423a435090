-- Take or keep a leadership lease. KEYS[1]: the lease key. ARGV: owner, lease_ms.
-- Returns 1 when ARGV[1] holds the lease (taken now, or renewed), 0 when another does.
local holder = redis.call("GET", KEYS[1])
if holder == false then
  redis.call("SET", KEYS[1], ARGV[1], "PX", tonumber(ARGV[2]))
  return 1
end
if holder == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
