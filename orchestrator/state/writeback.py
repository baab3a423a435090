"""Write-back state: records live in Redis shards and are acknowledged from there.

A write is a Lua compare-and-set on the record's version; once it is in Redis and marked
dirty it is acknowledged. A flusher per shard (:mod:`orchestrator.state.flusher`) then
persists dirty records to PostgreSQL with a version-guarded write. Reads hit Redis first
and fall back to PostgreSQL on a miss, filling the cache.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from orchestrator.constants import STATE_CLEAN_TTL_SECONDS, STATE_DIRTY, STATE_RECORD
from orchestrator.errors import Backpressure, VersionConflict
from orchestrator.lua import script
from orchestrator.state.durable import DurableState
from orchestrator.state.record import Record
from orchestrator.state.shards import shard_for, shard_name


class Shard:
    """One Redis server of the memory layer, with its scripts."""

    def __init__(self, url: str, client: redis.Redis) -> None:
        self.url = url
        self.name = shard_name(url)
        self.client = client
        self.put = script(client, "orchestrator.state", "put")
        self.fill = script(client, "orchestrator.state", "fill")
        self.clean = script(client, "orchestrator.state", "clean")

    def dirty_count(self) -> int:
        return int(self.client.zcard(STATE_DIRTY))


class WriteBackState:
    """State records in Redis shards, persisted to PostgreSQL behind the acknowledgement."""

    def __init__(self, shards: list[Shard], durable: DurableState, *, dirty_limit: int) -> None:
        self.shards = shards
        self.names = [s.name for s in shards]
        self.durable = durable
        self.dirty_limit = dirty_limit

    def shard(self, key: str) -> Shard:
        return self.shards[shard_for(key, self.names)]

    def get(self, key: str) -> Record | None:
        shard = self.shard(key)
        raw = shard.client.hmget(STATE_RECORD.format(key=key), "v", "ver")
        if raw[1] is None:
            return self._load(shard, key)
        if not raw[0]:
            return None  # cached absence
        return Record(key, json.loads(raw[0]), int(raw[1]))

    def _load(self, shard: Shard, key: str) -> Record | None:
        """Fill the cache from PostgreSQL (absence is cached too, as version 0)."""
        record = self.durable.get(key)
        shard.fill(
            keys=[STATE_RECORD.format(key=key)],
            args=["" if record is None else json.dumps(record.value, separators=(",", ":")),
                  0 if record is None else record.version, STATE_CLEAN_TTL_SECONDS],
        )
        return record

    def put(self, key: str, value: dict[str, Any], *, expected_version: int,
            value_json: str) -> Record:
        shard = self.shard(key)
        record_key = STATE_RECORD.format(key=key)
        for _ in range(2):
            reply = shard.put(keys=[record_key, STATE_DIRTY],
                              args=[expected_version, value_json, self.dirty_limit])
            outcome = reply[0].decode()
            if outcome == "ok":
                return Record(key, value, int(reply[1]))
            if outcome == "conflict":
                raise VersionConflict(
                    f"state {key!r} is at version {int(reply[1])}, not {expected_version}")
            if outcome == "full":
                raise Backpressure(
                    f"memory-layer shard {shard.name} holds {int(reply[1])} unflushed "
                    f"records, its limit (ORCH_STATE_DIRTY_LIMIT); is PostgreSQL reachable "
                    "and a flusher running?", retry_after=1.0)
            self._load(shard, key)
        raise VersionConflict(f"state {key!r}: the cache was evicted during the write")
