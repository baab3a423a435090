-- Mark an invocation's chain published. KEYS[1]: the in-flight hash. ARGV: ttl_s.
redis.call("HSET", KEYS[1], "dispatched", "1")
return redis.call("EXPIRE", KEYS[1], tonumber(ARGV[1]))
