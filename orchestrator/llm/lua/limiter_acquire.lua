-- Fleet-wide LLM admission for one provider pool, in arrival order.
-- KEYS: 1 waiters (zset ticket->waiter), 2 alive (hash waiter->deadline ms),
--       3 ticket counter, 4 keys out of rotation (hash key id ->
--       "status|first ms|last ms|probe at ms|strikes"), then 6 per API key:
--       leases (zset lease->expiry ms), requests (zset lease->start ms),
--       tokens (hash lease->tokens), token sum (string), cooldown (string: until ms,
--       "|p" appended when one call at a time probes the key after it until the string
--       expires), probe lease (string: the probing lease's id, expiring with it).
-- ARGV: 1 waiter id, 2 lease id, 3 tokens wanted, 4 lease ms, 5 waiter ttl ms,
--       6 number of API keys, then per key: id, rpm, tpm, concurrency; then the wake
--       list prefix (a waiter blocks on prefix .. waiter id); the window in ms (the
--       provider's minute and our safety margin); the wait samples list, the seconds
--       this waiter has waited so far and how many samples to keep (recorded on grant,
--       here, so an admitted call goes to the provider with no further round trip).
-- Returns {"granted", key index (1-based), now_ms, "1" when this call probes a key out of
-- rotation else "0"} | {"wait", ms until capacity could exist (0: unknown, a release will
-- wake us)} | {"nokeys", ms until the first probe may go} | {"toolarge", largest tpm}.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waiter, lease, wanted = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lease_ms, waiter_ttl, nkeys = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local WINDOW = tonumber(ARGV[8 + nkeys * 4]) or 60000

if not redis.call("ZSCORE", KEYS[1], waiter) then
  redis.call("ZADD", KEYS[1], redis.call("INCR", KEYS[3]), waiter)
end
redis.call("HSET", KEYS[2], waiter, now + waiter_ttl)

-- Waiters whose process died stop refreshing their deadline: drop them from the head.
local head
while true do
  local first = redis.call("ZRANGE", KEYS[1], 0, 0)
  head = first[1]
  if not head then break end
  local deadline = tonumber(redis.call("HGET", KEYS[2], head) or "0")
  if deadline >= now then break end
  redis.call("ZREM", KEYS[1], head)
  redis.call("HDEL", KEYS[2], head)
end
if head ~= waiter then
  return {"wait", "0"}
end

local PARTS = 6
local best, best_room, best_rate_probe = nil, -1, false
local probe_pick = nil
local soonest = nil
local next_probe = nil
local usable, largest_tpm = 0, 0
-- Whether the next in line could be admitted or needs a timer after this grant: false only
-- when every key is in rotation, not cooling, and its semaphore is full (then only a
-- release frees room, and it wakes the head of the line).
local wake_next = false
local actives, concs = {}, {}
for i = 1, nkeys do
  local base = 4 + (i - 1) * PARTS
  local leases, reqs, toks, toksum, cool, probe =
    KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5],
    KEYS[base + 6]
  local a = 6 + (i - 1) * 4
  local id, rpm, tpm, conc = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
    tonumber(ARGV[a + 4])
  -- A key out of rotation is cooling off, or due: then exactly one call probes it.
  local considered, due, rate_probe = true, false, false
  local out = redis.call("HGET", KEYS[4], id)
  if out then
    wake_next = true
    local probe_at = tonumber(string.match(out, "^%d+|%d+|%d+|(%d+)|"))
    if probe_at > now then
      considered = false
      if not next_probe or probe_at - now < next_probe then next_probe = probe_at - now end
    else
      local probe_ttl = redis.call("PTTL", probe)
      if probe_ttl ~= -2 then
        -- Its probe is in flight: the outcome decides, and wakes the line.
        considered = false
        usable = usable + 1
        if tpm > largest_tpm then largest_tpm = tpm end
        if probe_ttl > 0 and (not soonest or probe_ttl < soonest) then soonest = probe_ttl end
      else
        due = true
      end
    end
  end
  if considered then
    usable = usable + 1
    if tpm > largest_tpm then largest_tpm = tpm end
    local wait = nil
    local cooled, probing_flag = string.match(redis.call("GET", cool) or "0", "^(%d+)(|?p?)$")
    cooled = tonumber(cooled) or 0
    if cooled > now then
      wait = cooled - now
      wake_next = true
    elseif probing_flag == "|p" and redis.call("PTTL", probe) ~= -2 then
      -- One call is probing the provider's window after a 429: its answer wakes the line.
      wait = nil
      wake_next = true
    else
      rate_probe = probing_flag == "|p"
      redis.call("ZREMRANGEBYSCORE", leases, "-inf", now)
      -- Requests older than the window leave it, and so do their tokens.
      local old = redis.call("ZRANGEBYSCORE", reqs, "-inf", now - WINDOW)
      for _, member in ipairs(old) do
        local n = tonumber(redis.call("HGET", toks, member) or "0")
        if n > 0 then redis.call("DECRBY", toksum, n) end
        redis.call("HDEL", toks, member)
      end
      if #old > 0 then redis.call("ZREMRANGEBYSCORE", reqs, "-inf", now - WINDOW) end
      local active = redis.call("ZCARD", leases)
      actives[i], concs[i] = active, conc
      local recent = redis.call("ZCARD", reqs)
      local used = tonumber(redis.call("GET", toksum) or "0")
      if active < conc and recent < rpm and used + wanted <= tpm then
        local room = math.min((conc - active) / conc, (rpm - recent) / rpm,
                              (tpm - used - wanted) / tpm)
        -- A due key is probed before any other is used: it comes back as soon as it can.
        if due then
          if not probe_pick then probe_pick = i end
        elseif room > best_room then
          best, best_room, best_rate_probe = i, room, rate_probe
        end
      else
        if recent >= rpm then
          local oldest = redis.call("ZRANGE", reqs, 0, 0, "WITHSCORES")
          wait = tonumber(oldest[2]) + WINDOW - now
        end
        if used + wanted > tpm then
          -- When will enough tokens have left the window?
          local need, freed = used + wanted - tpm, 0
          local entries = redis.call("ZRANGE", reqs, 0, -1, "WITHSCORES")
          for j = 1, #entries, 2 do
            freed = freed + tonumber(redis.call("HGET", toks, entries[j]) or "0")
            if freed >= need then
              local w = tonumber(entries[j + 1]) + WINDOW - now
              if not wait or w > wait then wait = w end
              break
            end
          end
        end
        -- A full semaphore needs no timer: the release that frees a slot wakes us.
      end
    end
    if wait and (not soonest or wait < soonest) then soonest = wait end
  end
end

if usable == 0 then return {"nokeys", tostring(next_probe or 0)} end
if wanted > largest_tpm then return {"toolarge", tostring(largest_tpm)} end
local probing = "0"
if probe_pick then
  best, probing, best_rate_probe = probe_pick, "1", false
end
if not best then
  -- A key whose cool-off ends first may be probed then: look again at that time.
  if next_probe and (not soonest or next_probe < soonest) then soonest = next_probe end
  return {"wait", tostring(soonest or 0)}
end

local base = 4 + (best - 1) * PARTS
redis.call("ZADD", KEYS[base + 1], now + lease_ms, lease)
redis.call("ZADD", KEYS[base + 2], now, lease)
redis.call("HSET", KEYS[base + 3], lease, wanted)
redis.call("INCRBY", KEYS[base + 4], wanted)
-- Not the cooldown (part 5): its expiry is when a probing cool-down ends.
for k = 1, 4 do redis.call("PEXPIRE", KEYS[base + k], WINDOW * 2 + lease_ms) end
if probing == "1" or best_rate_probe then
  redis.call("SET", KEYS[base + 6], lease, "PX", lease_ms)
end
redis.call("ZREM", KEYS[1], waiter)
redis.call("HDEL", KEYS[2], waiter)
redis.call("DEL", ARGV[7 + nkeys * 4] .. waiter)
local waits = ARGV[9 + nkeys * 4]
redis.call("LPUSH", waits, ARGV[10 + nkeys * 4])
redis.call("LTRIM", waits, 0, tonumber(ARGV[11 + nkeys * 4]) - 1)
-- The next in line may fit too (another key, or room left on this one), or may need to
-- learn when the window frees room: let it look. Behind a full semaphore it would only be
-- told to wait (a round trip per admission, for nothing): the next release wakes it.
if not wake_next then
  for i, active in pairs(actives) do
    if active + (i == best and 1 or 0) < concs[i] then wake_next = true end
  end
end
local next_waiter = wake_next and redis.call("ZRANGE", KEYS[1], 0, 0)[1]
if next_waiter then
  local wake = ARGV[7 + nkeys * 4] .. next_waiter
  redis.call("LPUSH", wake, "1")
  redis.call("PEXPIRE", wake, 10000)
end
return {"granted", tostring(best), tostring(now), probing}
