-- Prepare an ended invocation's in-flight hash for a replay. KEYS[1]: the hash.
-- ARGV: ttl_s, then (index, record_json) pairs of done steps to restore (from
-- PostgreSQL, when the hash expired). Drops the cancellation, claims, death and
-- re-dispatch counts, the dispatch mark and every record that is not "done", so the
-- replay runs from the first step that did not succeed. Returns the first such index.
local all = redis.call("HGETALL", KEYS[1])
for i = 1, #all, 2 do
  local field = all[i]
  local kind = string.match(field, "^([a-z]+)")
  if kind == "done" then
    local ok, record = pcall(cjson.decode, all[i + 1])
    if not ok or record["status"] ~= "done" then
      redis.call("HDEL", KEYS[1], field)
    end
  elseif kind == "cancelled" or kind == "claim" or kind == "deaths" or kind == "started"
      or kind == "redispatched" or kind == "dispatch" then
    redis.call("HDEL", KEYS[1], field)
  end
end
for i = 2, #ARGV, 2 do
  redis.call("HSETNX", KEYS[1], "done:" .. ARGV[i], ARGV[i + 1])
end
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[1]))
local first = 0
while redis.call("HEXISTS", KEYS[1], "done:" .. first) == 1 do
  first = first + 1
end
return first
