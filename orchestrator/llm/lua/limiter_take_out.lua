-- A key was refused (401/403): take it out of rotation for a cool-off; wake the line.
-- KEYS: 1 keys out of rotation (hash), 2 the key's probe lease, 3 waiters, 4 wake prefix
-- ARGV: 1 key id, 2 HTTP status, 3 the refused lease's id, 4 cool-off ms, 5 cap ms
-- The refused call was the key's probe when it holds the probe lease: the key goes back
-- for twice its last cool-off (up to the cap). A refusal of a call that was already in
-- flight when the key went out is the same incident: nothing changes.
-- Returns the record ("status|first ms|last ms|probe at ms|strikes"), or false when
-- nothing changed.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local base, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local probe = redis.call("GET", KEYS[2]) == ARGV[3]
local out = redis.call("HGET", KEYS[1], ARGV[1])
local first, strikes = now, 1
if out then
  if not probe then return false end
  local f, s = string.match(out, "^%d+|(%d+)|%d+|%d+|(%d+)$")
  first, strikes = tonumber(f), tonumber(s) + 1
end
if probe then redis.call("DEL", KEYS[2]) end
local cooloff = math.min(base * 2 ^ (strikes - 1), math.max(base, cap))
local record = string.format("%d|%d|%d|%d|%d", tonumber(ARGV[2]), first, now,
                             now + math.floor(cooloff), strikes)
redis.call("HSET", KEYS[1], ARGV[1], record)
local head = redis.call("ZRANGE", KEYS[3], 0, 0)
if head[1] then
  local wake = KEYS[4] .. head[1]
  redis.call("LPUSH", wake, "1")
  redis.call("PEXPIRE", wake, 10000)
end
return record
