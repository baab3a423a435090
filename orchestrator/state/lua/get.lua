-- Read a write-back record. KEYS: 1 record hash.
-- Returns {"ok", version, value} | {"miss"} (not cached) | {"stale", version, value, its
-- epoch, this server's epoch} (cached by another server or before a restart: check it
-- against PostgreSQL before serving it; see put.lua).
local record = redis.call("HMGET", KEYS[1], "v", "ver", "ep")
if not record[2] then
  return {"miss"}
end
-- A plain find of "run_id:<the record's epoch>" in INFO is the check; the epoch is
-- parsed out only for a stale record. As in put.lua, a copy bound to the server a
-- connection learned (SERVER set to its epoch) skips INFO for a record of that epoch.
local SERVER = false
if not SERVER or record[3] ~= SERVER then
  local info = redis.call("INFO", "server")
  if not record[3] or #record[3] ~= 16 or not string.find(info, "run_id:" .. record[3], 1, true) then
    local epoch = string.sub(string.match(info, "run_id:(%x+)"), 1, 16)
    return {"stale", record[2], record[1] or "", record[3] or "", epoch}
  end
end
return {"ok", record[2], record[1] or ""}
