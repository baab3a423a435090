"""Changing the memory layer's shards (``ORCH_STATE_REDIS_URLS``) without losing a write.

Keys are placed by rendezvous hashing, so growing from n to n+1 shards moves about 1/(n+1)
of them, all to the new shard. ``reshard(old, new)`` makes the move safe:
1. every old shard is flushed until it holds no dirty record (all in PostgreSQL);
2. each cached record whose owner changes is dropped from its old shard (only if still
   clean, and not quarantined); its new shard loads it from PostgreSQL on first use.
Run it with state writers paused (``orchestrator pause agents``, or workers stopped), then
start the fleet with the new ``ORCH_STATE_REDIS_URLS``. A write that lands on an old shard
during the move is never dropped: that record stays, and the command reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.constants import STATE_DIRTY, STATE_QUARANTINE, STATE_RECORD
from orchestrator.errors import ServiceError
from orchestrator.lua import script
from orchestrator.state.flusher import Flusher
from orchestrator.state.shards import shard_for
from orchestrator.state.writeback import Shard
from orchestrator.store.state_rows import StateRows


@dataclass(frozen=True)
class ReshardReport:
    flushed: int
    moved: int
    kept_dirty: int
    stayed: int


def reshard(old: list[Shard], new: list[Shard], rows: StateRows, *, owner: str,
            flush_timeout_rounds: int = 10_000) -> ReshardReport:
    """Prepare the move from shards ``old`` to ``new``; see the module docstring."""
    flushed = 0
    for shard in old:
        flusher = Flusher(shard, rows, owner=owner, batch=1000, coalesce=0)
        for _ in range(flush_timeout_rounds):
            result = flusher.flush_once()
            flushed += result.cleaned
            if shard.dirty_count() == 0:
                break
        else:
            raise ServiceError(f"shard {shard.name} still has dirty records: are writers "
                               "paused and PostgreSQL reachable?")
    names = [s.name for s in new]
    prefix = STATE_RECORD.format(key="")
    moved = kept = stayed = 0
    for shard in old:
        drop = script(shard.client, "orchestrator.state", "drop_clean")
        for raw in shard.client.scan_iter(match=prefix + "*", count=1000):
            record_key = raw.decode()
            key = record_key[len(prefix):]
            if names[shard_for(key, names)] == shard.name:
                stayed += 1
                continue
            if drop(keys=[STATE_DIRTY, record_key, STATE_QUARANTINE], args=[key]):
                moved += 1
            else:
                kept += 1
    return ReshardReport(flushed, moved, kept, stayed)
