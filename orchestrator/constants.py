"""Every Redis key prefix the orchestrator writes, each with the reason it exists.

All keys live under ``orch:`` so an operator can find (and never collide with) ours.
"""

from __future__ import annotations

PREFIX = "orch:"

# An in-flight invocation's step records and claims (a hash). It lives beside the
# broker's messages because it is exactly as durable as they are: the messages carry
# the outputs, the hash says which steps are done and who runs which.
INFLIGHT = PREFIX + "inflight:{invocation_id}"

# How long an in-flight hash outlives its last write: longer than any redelivery can
# come late (the visibility timeout), so a late duplicate still finds "done".
INFLIGHT_MIN_TTL_SECONDS = 24 * 3600

# The LLM limiter of one provider pool (base URL + model), shared by the fleet:
# waiters in arrival order, and per API key (by fingerprint, never the key) its leases,
# request log, token log, cooldown (after a 429) and probe lease. Entries expire two
# windows after their last use; the probe lease (one call in the fleet tries a key back
# after its cool-off) expires with the probing call's limiter lease.
LLM_POOL = PREFIX + "llm:{pool}"
LLM_WAITERS = LLM_POOL + ":waiters"
LLM_ALIVE = LLM_POOL + ":alive"
LLM_TICKET = LLM_POOL + ":ticket"
LLM_WAKE = LLM_POOL + ":wake:"
LLM_KEY = LLM_POOL + ":key:{key}"
LLM_KEY_PARTS = ("leases", "requests", "tokens", "tokensum", "cooldown", "probe")
# Keys the provider refused (401/403), out of rotation (hash: key fingerprint ->
# "status|first ms|last ms|probe at ms|strikes"). No expiry: a key comes back only
# through a probe that succeeds or `orchestrator keys restore`, never by forgetting.
LLM_OUT = LLM_POOL + ":out"
# Upper bound of a key's cool-off, which doubles with each refused probe.
LLM_KEY_COOLOFF_CAP_SECONDS = 3600.0

# The limiter's wait-time samples (seconds), newest first, for `status` and benchmarks.
LLM_WAITS = LLM_POOL + ":waits"

# Steps finished per queue and second: the drain rate that backpressure's retry-after is
# computed from. Two minutes of buckets are kept; ten seconds are read.
DRAINED = PREFIX + "drained:{queue}:"
DRAINED_TTL_SECONDS = 120

# A circuit breaker's fleet-wide state (hash: state, opened_at, forced), its outcome
# window (list, newest first, trimmed to the window size) and its half-open probe lease
# (string with expiry: exactly one probe in the fleet). No expiry on state: it must
# survive quiet periods.
BREAKER = PREFIX + "breaker:{name}"
BREAKER_WINDOW = BREAKER + ":window"
BREAKER_PROBE = BREAKER + ":probe"
BREAKER_NAMES = PREFIX + "breakers"
# The fleet's breaker transitions, newest first, for `orchestrator breakers`.
BREAKER_EVENTS = PREFIX + "breaker-events"
BREAKER_EVENTS_KEPT = 500

# Write-back state on a shard: the record (hash: v = JSON value, ver = version), and the
# shard's dirty index (zset: key -> ms when it first became dirty), which the flusher
# drains into PostgreSQL. Clean records expire after STATE_CLEAN_TTL (reloaded on miss);
# dirty ones never do.
STATE_RECORD = PREFIX + "state:{key}"
STATE_DIRTY = PREFIX + "state-dirty"
STATE_CLEAN_TTL_SECONDS = 3600
# Seconds a dirty record waits before the flusher takes it: the writes it takes meanwhile
# become one PostgreSQL row, and an acknowledged write lives only in Redis about this
# long plus up to one interval (below) and a round: 0.35 + 0.2 s, inside what Redis's own
# AOF (fsync every second) may lose in a crash. A flusher given 0 takes every dirty
# record at once.
STATE_COALESCE_SECONDS = 0.35
# Seconds the flusher sleeps after a round that found fewer records due than its batch
# (``orchestrator flusher --interval``): a record is taken within this of its window's
# end. Under steady writes every round finds some due, so this sets how many rounds (a
# PostgreSQL transaction and its Redis reads and marks each) run per second: 0.2 s makes
# 5, where a 0.05 s interval with a 0.5 s window made 20 for the same worst-case wait
# (0.55 s); on a 2-core host shared with the writers their acknowledgement p99 went from
# 1.32x to 1.24x the Redis floor's (mean of bench_state runs; README, the seventh machine).
STATE_FLUSH_INTERVAL_SECONDS = 0.2
# One active flusher per shard: a lease renewed while it runs.
STATE_FLUSHER_LEASE = PREFIX + "state-flusher"
# Flush lag samples (ms from first dirty to persisted), newest first, for benchmarks.
STATE_FLUSH_LAGS = PREFIX + "state-flush-lags"
# Records PostgreSQL refused (hash: state key -> reason), set aside out of the dirty
# index so they never block a flush; the record itself stays in Redis, with no expiry,
# for an operator (`orchestrator status`). Writing the key again takes it out.
STATE_QUARANTINE = PREFIX + "state-quarantine"
# Cached versions that lost to PostgreSQL's (hash: state key -> JSON {version, value,
# postgres_version, at_ms}), kept for an operator with no expiry: two histories of one
# key were both acknowledged (a split brain, a write to PostgreSQL behind our back).
# PostgreSQL's won and the record continues from it. One hash per shard.
STATE_CONFLICTS = PREFIX + "state-conflicts"

# The one active reconciler of the fleet: a lease (owner name, with expiry) renewed
# while it runs; the others stand by and take over when it lapses.
RECONCILER_LEADER = PREFIX + "reconciler"

# Fleet-wide counters and samples for the metrics exporter (read at scrape time, so no
# worker process keeps metric state of its own).
METRIC_COUNTERS = PREFIX + "metrics:counters"  # hash: counter name -> value
METRIC_SAMPLES = PREFIX + "metrics:samples:{name}"  # list of recent float samples
METRIC_SAMPLES_KEPT = 2000

# Queue control (`orchestrator pause|drain|resume|purge`).
# Paused queues (hash: queue -> JSON {by, at, reason}). Every worker reads it about once a
# second and stops or restarts consuming the queues of its own profile, so a pause holds
# for workers started or restarted later. No expiry: it lasts until `orchestrator resume`.
QUEUE_PAUSES = PREFIX + "paused"
# When each queue was last resumed (hash: queue -> Redis-time ms): the reconciler counts
# a resumed queue's idle time from then, not from before the pause.
QUEUE_RESUMED = PREFIX + "resumed"
# Messages `drain --park` set aside (a list, oldest at the right like the queue itself);
# `resume` puts them back ahead of newer ones. No expiry: each is an invocation.
QUEUE_PARKED = PREFIX + "parked:{queue}"
# Messages `purge` took out of a queue, kept until their invocations are cancelled, so a
# purge interrupted half-way is finished by the next one and no invocation is lost.
QUEUE_PURGING = PREFIX + "purging:{queue}"
