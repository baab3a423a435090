"""The flusher's coalescing window: a record is flushed once it has been dirty for the
window, with every write it took meanwhile in one PostgreSQL row, and a record written
without pause is still flushed within the window of its first write. Real Redis,
PostgreSQL and, for the defaults, a real flusher process."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from config import Settings
from orchestrator import runtime, state, subsystems
from orchestrator.constants import STATE_COALESCE_SECONDS, STATE_DIRTY, STATE_RECORD
from orchestrator.devstack.processes import FlusherProcess
from orchestrator.state.durable import DurableState
from orchestrator.state.flusher import REDIS_CHUNK, Flusher, wait_until_clean


def _bump(value: dict[str, int]) -> dict[str, int]:
    return {"n": int(value.get("n", 0)) + 1}


def _key() -> str:
    return f"customer:{uuid.uuid4().hex[:8]}"


def _flusher(coalesce: float) -> Flusher:
    return Flusher(runtime.current().state_shards[0], subsystems.current().state_rows,
                   owner=f"test-{uuid.uuid4().hex[:6]}", coalesce=coalesce)


def _persisted(key: str) -> int | None:
    record = DurableState(subsystems.current().state_rows).get(key)
    return None if record is None else record.version


def test_writes_inside_the_window_wait_and_then_go_to_postgres_as_one_row(
    settings: Settings,
) -> None:
    key = _key()
    flusher = _flusher(coalesce=1.0)
    started = time.monotonic()
    for _ in range(5):
        state.update(key, _bump)
    assert flusher.flush_once().read == 0  # dirty for less than the window: not yet
    assert _persisted(key) is None
    time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
    result = flusher.flush_once()
    assert (result.read, result.cleaned) == (1, 1)  # five writes, one row
    assert _persisted(key) == 5
    assert runtime.current().state_shards[0].dirty_count() == 0


def test_a_key_written_without_pause_is_flushed_while_the_writes_go_on(
    settings: Settings,
) -> None:
    """Its dirty time is its first write's, so a hot key is never put off."""
    key = _key()
    flusher = _flusher(coalesce=0.3)
    stop = threading.Event()
    writer = threading.Thread(target=lambda: [state.update(key, _bump)
                                              for _ in iter(stop.is_set, True)])
    writer.start()
    try:
        persisted: list[int] = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            flusher.flush_once()
            if (version := _persisted(key)) is not None and version not in persisted:
                persisted.append(version)
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
    # About one row per window and round while it was written: several, each newer.
    assert len(persisted) >= 4, persisted
    assert persisted == sorted(persisted)


def test_a_window_of_zero_takes_every_dirty_record(settings: Settings) -> None:
    key = _key()
    state.update(key, _bump)
    assert _flusher(coalesce=0).flush_once().cleaned == 1
    assert _persisted(key) == 1


def test_a_round_reads_a_chunk_of_records_whole_and_drops_marks_of_records_gone(
    settings: Settings,
) -> None:
    """A round reads its records a chunk at a time in one command: each record's value,
    version and epoch in order, a record without an epoch field or without a hash at
    all (its mark left behind) read as such, not shifted onto its neighbours."""
    keys = [_key() for _ in range(REDIS_CHUNK + 7)]
    for n, key in enumerate(keys):
        for _ in range(n % 3 + 1):
            state.update(key, _bump)
    client = runtime.current().state_shards[0].client
    gone = [STATE_RECORD.format(key=_key()) for _ in range(3)]
    client.zadd(STATE_DIRTY, {record: 0 for record in gone})
    client.hdel(STATE_RECORD.format(key=keys[5]), "ep")  # as an older version wrote it
    result = _flusher(coalesce=0).flush_once()
    assert (result.read, result.cleaned) == (len(keys) + 3, len(keys))
    assert [_persisted(key) for key in keys] == [n % 3 + 1 for n in range(len(keys))]
    assert client.zscore(STATE_DIRTY, gone[0]) is None
    assert runtime.current().state_shards[0].dirty_count() == 0


@pytest.mark.timeout(60)
def test_the_flusher_process_with_its_defaults_persists_within_a_second(
    settings: Settings, tmp_path: Path
) -> None:
    """``orchestrator flusher`` as users start it: window STATE_COALESCE_SECONDS, niceness 5."""
    assert STATE_COALESCE_SECONDS < 1.0
    flusher = FlusherProcess(settings.environment(), log_dir=tmp_path).start()
    try:
        keys = [_key() for _ in range(20)]
        for key in keys:
            state.update(key, _bump)
        written = time.monotonic()
        assert wait_until_clean(runtime.current().state_shards, timeout=10), flusher.log_tail()
        assert time.monotonic() - written < 1.0 + 0.5  # window, a round, this poll
        assert all(_persisted(key) == 1 for key in keys)
        pid = flusher.pid
        assert pid is not None
        nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert nice == 5
        assert os.sched_getscheduler(pid) == os.SCHED_BATCH  # waking, it preempts no one
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
        if enabled.exists() and enabled.read_text().strip() == "1":
            # It leads its own session (as FlusherProcess starts it): the session too.
            autogroup = Path(f"/proc/{pid}/autogroup").read_text()
            assert autogroup.split()[-1] == "5", autogroup
    finally:
        flusher.stop()
