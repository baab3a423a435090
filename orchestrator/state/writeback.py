"""Write-back state: records live in Redis shards and are acknowledged from there.

A write is a Lua compare-and-set on the record's version; once it is in Redis and marked
dirty it is acknowledged. A flusher per shard (:mod:`orchestrator.state.flusher`) then
persists dirty records to PostgreSQL with a version-guarded write. Reads hit Redis first
and fall back to PostgreSQL on a miss, filling the cache.

A Redis that comes back older than PostgreSQL (the last second of its AOF lost, an RDB
restore, a promoted replica that lagged) must not have writes build on its old copies:
the next one would be acknowledged at a version PostgreSQL already holds, and the
flusher could never persist it. So each cached record carries the epoch of the server
it was validated on (its ``run_id``, new at every start, different on every replica).
A record read or written on another epoch is first reconciled with PostgreSQL's row:
kept if it is as new or newer, replaced if it is older (see ``lua/reconcile.lua``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any, Protocol

import redis

from orchestrator import telemetry
from orchestrator.constants import (
    STATE_CLEAN_TTL_SECONDS,
    STATE_CONFLICTS,
    STATE_DIRTY,
    STATE_RECORD,
)
from orchestrator.errors import Backpressure, VersionConflict
from orchestrator.lua import script, source
from orchestrator.state.cache import RecordCache
from orchestrator.state.durable import DurableState
from orchestrator.state.record import Basis, Record, encode
from orchestrator.state.shards import shard_for, shard_name
from orchestrator.state.wire import BoundLua, Lua, Wire

log = logging.getLogger(__name__)

# A record's cache, a PostgreSQL round trip and back may cross another writer; past
# this many turns the write gives up with VersionConflict (``update`` then retries).
PUT_TURNS = 4


class Shard:
    """One Redis server of the memory layer, with its scripts."""

    def __init__(self, url: str, client: redis.Redis) -> None:
        self.url = url
        self.name = shard_name(url)
        self.client = client
        # Run over ``wire``: the checked read and the update's compare-and-set (each as
        # its copy for the server the connection reaches), and the flusher's round (a
        # chunk of records read, a chunk marked clean, one command each).
        self.read = BoundLua.of(source("orchestrator.state", "get"))
        self.put = BoundLua.of(source("orchestrator.state", "put"))
        self.records = Lua.of(source("orchestrator.state", "records"))
        self.clean = Lua.of(source("orchestrator.state", "clean"))
        self.fill = script(client, "orchestrator.state", "fill")
        self.reconcile = script(client, "orchestrator.state", "reconcile")
        self.wire = Wire(client)  # reads, the update's commands, the flusher's round

    def close(self) -> None:
        self.wire.close()
        self.client.close()

    def dirty_count(self) -> int:
        return int(self.client.zcard(STATE_DIRTY))


def conflicts(shard: Shard) -> dict[str, dict[str, Any]]:
    """The versions ``shard`` set aside because PostgreSQL held another history of the
    same key: state key -> ``{version, value, postgres_version, at_ms}``."""
    return {k.decode(): json.loads(v) for k, v in shard.client.hgetall(STATE_CONFLICTS).items()}


class Stored(Protocol):
    """PostgreSQL's row of a key (a :class:`Record` or the store's ``StoredState``)."""

    @property
    def value(self) -> dict[str, Any]: ...

    @property
    def version(self) -> int: ...


def reconcile(shard: Shard, key: str, stored: Stored | None, *, version: bytes,
              value: bytes, epoch: bytes) -> str:
    """Reconcile the cached record of ``key`` (as read: ``version``, ``value``,
    ``epoch``) with ``stored``, PostgreSQL's row read after it; returns the outcome of
    ``lua/reconcile.lua``: "kept", "adopted", "conflict", or "moved" when the record
    changed meanwhile (read it again). A conflict is logged as a warning."""
    if stored is None:
        same = not value
    else:
        same = int(version) == stored.version and bool(value) and \
            json.loads(value) == stored.value
    outcome = shard.reconcile(
        keys=[STATE_RECORD.format(key=key), STATE_DIRTY, STATE_CONFLICTS],
        args=[version, value, epoch,
              "" if stored is None else json.dumps(stored.value, separators=(",", ":")),
              0 if stored is None else stored.version, "1" if same else "0",
              STATE_CLEAN_TTL_SECONDS, key],
    ).decode()
    held = 0 if stored is None else stored.version
    if outcome == "conflict":
        log.warning("state %r on shard %s: PostgreSQL holds version %d and the cache "
                    "version %s, from two histories; PostgreSQL's is now the record, the "
                    "cached one is kept in %s", key, shard.name, held, version.decode(),
                    STATE_CONFLICTS)
    elif outcome == "adopted":
        log.info("state %r on shard %s: the cache held version %s, PostgreSQL version %d "
                 "(the Redis data is older); reloaded", key, shard.name, version.decode(),
                 held)
    return outcome


class WriteBackState:
    """State records in Redis shards, persisted to PostgreSQL behind the acknowledgement.

    ``reconciled`` counts this process's reconciliations by outcome; with a
    ``telemetry`` client they are counted fleet-wide too (``state_reconciled:<outcome>``).
    """

    def __init__(self, shards: list[Shard], durable: DurableState, *, dirty_limit: int,
                 telemetry: redis.Redis | None = None) -> None:
        self.shards = shards
        self.names = [s.name for s in shards]
        self.durable = durable
        self.dirty_limit = dirty_limit
        self.telemetry = telemetry
        self.reconciled: Counter[str] = Counter()
        self.cache = RecordCache()
        self._epochs_seen: set[tuple[str, bytes]] = set()

    def shard(self, key: str) -> Shard:
        return self.shards[shard_for(key, self.names)]

    def get(self, key: str) -> Record | None:
        """The record at ``key``, its epoch checked (reconciled with PostgreSQL first
        when it was cached by another server or before a restart)."""
        shard = self.shard(key)
        record_key = STATE_RECORD.format(key=key)
        for _ in range(PUT_TURNS):
            reply = shard.wire.evalsha(shard.read, [record_key], [])
            outcome = reply[0]
            if outcome == b"ok":
                return None if not reply[2] else Record(key, json.loads(reply[2]),
                                                         int(reply[1]))
            if outcome == b"miss":
                return self._load(shard, key)
            self._stale(shard, key, reply)
        raise VersionConflict(f"state {key!r}: its cache kept changing while being read")

    def basis(self, key: str) -> tuple[Basis, bool]:
        """The first basis of an update of ``key`` and whether it was just read: the
        record this process remembers (no round trip) while remembered records mostly
        prove current (:meth:`RecordCache.trusted`), else one plain HMGET. Neither is
        epoch-checked: the compare-and-set checks it and loses on a stale record."""
        remembered = self.cache.get(key)
        if remembered is not None and self.cache.trusted():
            return remembered, False
        shard = self.shard(key)
        value, version = shard.wire.call("HMGET", STATE_RECORD.format(key=key), "v", "ver")
        if version is None:
            return Basis.of(self._load(shard, key)), True
        read = Basis(int(version), value or b"")
        if remembered is not None:
            self.cache.observe(remembered.version == read.version)
        return read, True

    def attempt(self, key: str, basis: Basis, value: dict[str, Any], value_json: str, *,
                remembered: bool = False) -> Record | Basis:
        """Write ``value`` (its JSON ``value_json``) if the record still holds ``basis``
        (version and value text): the new :class:`Record`, or, refused, the record's
        current basis (from the conflict reply: no read). Either is remembered.
        ``remembered``: ``basis`` is the cache's, unread; the outcome is counted in
        its freshness."""
        reply = self._cas(self.shard(key), key,
                          [basis.version, value_json, self.dirty_limit, basis.text])
        if remembered:
            self.cache.observe(reply[0] == b"ok")
        if reply[0] == b"ok":
            version = int(reply[1])
            self.cache.put(key, Basis(version, value_json))
            return Record(key, value, version)
        current = Basis(int(reply[1]), reply[2])
        self.cache.put(key, current)
        return current

    def _load(self, shard: Shard, key: str) -> Record | None:
        """Fill the cache from PostgreSQL (absence is cached too, as version 0)."""
        record = self.durable.get(key)
        shard.fill(
            keys=[STATE_RECORD.format(key=key)],
            args=["" if record is None else encode(record.value),
                  0 if record is None else record.version, STATE_CLEAN_TTL_SECONDS],
        )
        return record

    def _stale(self, shard: Shard, key: str, reply: list[bytes]) -> None:
        """A ``stale`` reply (version, value, its epoch, the server's): reconcile."""
        _, version, value, epoch, server = reply
        if (shard.name, server) not in self._epochs_seen:
            self._epochs_seen.add((shard.name, server))
            log.warning("state shard %s: records cached before a Redis restart, restore or "
                        "failover (epoch %s, now %s); each is checked against PostgreSQL "
                        "before its next read or write", shard.name,
                        epoch.decode() or "none", server.decode())
        # PostgreSQL unreachable raises here, changing nothing: the record stays
        # unusable until it answers, rather than have a write build on an old copy.
        outcome = reconcile(shard, key, self.durable.get(key), version=version,
                            value=value, epoch=epoch)
        self.reconciled[outcome] += 1
        if self.telemetry is not None:
            telemetry.count(self.telemetry, f"state_reconciled:{outcome}")

    def put(self, key: str, value: dict[str, Any], *, expected_version: int,
            value_json: str) -> Record:
        """Compare-and-set; raises ``VersionConflict`` unless the record is at
        ``expected_version``. The script reports a conflict without checking the
        record's epoch, so a conflict is confirmed with a checked read: a stale cache
        that PostgreSQL's row replaces at ``expected_version`` does not refuse the
        write."""
        shard = self.shard(key)
        for _ in range(PUT_TURNS):
            reply = self._cas(shard, key, [expected_version, value_json, self.dirty_limit])
            if reply[0] == b"ok":
                return Record(key, value, int(reply[1]))
            found = self.get(key)
            have = 0 if found is None else found.version
            if have != expected_version:
                raise VersionConflict(
                    f"state {key!r} is at version {have}, not {expected_version}")
            # it was stale; PostgreSQL's row is the expected one
        raise VersionConflict(f"state {key!r}: its cache kept changing during the write")

    def _cas(self, shard: Shard, key: str, args: list[Any]) -> list[bytes]:
        """Run ``lua/put.lua`` until it answers ``ok`` or ``conflict`` (loading a missing
        record, reconciling a stale one); raises ``Backpressure`` on ``full``."""
        record_key = STATE_RECORD.format(key=key)
        for _ in range(PUT_TURNS):
            reply: list[bytes] = shard.wire.evalsha(shard.put, [record_key, STATE_DIRTY], args)
            outcome = reply[0]
            if outcome in (b"ok", b"conflict"):
                return reply
            if outcome == b"full":
                raise Backpressure(
                    f"memory-layer shard {shard.name} holds {int(reply[1])} unflushed "
                    f"records, its limit (ORCH_STATE_DIRTY_LIMIT); is PostgreSQL reachable "
                    "and a flusher running?", retry_after=1.0)
            if outcome == b"miss":
                self._load(shard, key)
            else:
                self._stale(shard, key, reply)
        raise VersionConflict(f"state {key!r}: its cache kept changing during the write")
