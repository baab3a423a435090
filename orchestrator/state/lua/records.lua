-- The flusher's read of a chunk of records: for each of KEYS, in order, its value,
-- version and epoch ({v, ver, ep}, a missing field false). One command instead of one
-- HMGET per record: the client packs and parses one reply, not fifty.
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call("HMGET", KEYS[i], "v", "ver", "ep")
end
return out
