-- Move every message of a queue into one list, atomically (park, purge).
-- KEYS[1..n-1]: the queue's lists in kombu's order of preference (the queue, then its
-- priority lists); KEYS[n]: the destination. Each list holds its oldest message at the
-- right (kombu LPUSHes and BRPOPs); the destination keeps that order, with what it held
-- before (moved earlier, so older) further right. Returns how many messages moved.
local dest = KEYS[#KEYS]
local moved = 0
for i = 1, #KEYS - 1 do
  while redis.call("RPOPLPUSH", KEYS[i], dest) do
    moved = moved + 1
  end
end
return moved
