-- Read a write-back record. KEYS: 1 record hash.
-- Returns {"ok", version, value} | {"miss"} (not cached) | {"stale", version, value, its
-- epoch, this server's epoch} (cached by another server or before a restart: check it
-- against PostgreSQL before serving it; see put.lua).
local epoch = string.sub(string.match(redis.call("INFO", "server"), "run_id:(%x+)"), 1, 16)
local record = redis.call("HMGET", KEYS[1], "v", "ver", "ep")
if not record[2] then
  return {"miss"}
end
if record[3] ~= epoch then
  return {"stale", record[2], record[1] or "", record[3] or "", epoch}
end
return {"ok", record[2], record[1] or ""}
