"""The record cache's trust: remembered records are written on unread only while they
mostly prove current."""

from __future__ import annotations

from orchestrator.state.cache import FRESHNESS_WINDOW, RecordCache
from orchestrator.state.record import Basis


def test_a_new_cache_is_trusted_and_stays_so_while_its_records_are_current() -> None:
    cache = RecordCache()
    assert cache.trusted()
    for _ in range(10 * FRESHNESS_WINDOW):
        cache.observe(True)
    assert cache.trusted()


def test_mostly_stale_records_stop_the_trust_and_current_ones_bring_it_back() -> None:
    cache = RecordCache()
    for i in range(4 * FRESHNESS_WINDOW):
        cache.observe(i % 8 == 0)  # one in eight current: many writers, wide key space
    assert not cache.trusted()
    for _ in range(2 * FRESHNESS_WINDOW):
        cache.observe(True)
    assert cache.trusted()


def test_one_stale_record_among_current_ones_keeps_the_trust() -> None:
    cache = RecordCache()
    for i in range(4 * FRESHNESS_WINDOW):
        cache.observe(i % 4 != 0)
    assert cache.trusted()
    cache.put("k", Basis(3, "{}"))
    assert cache.get("k") == Basis(3, "{}")
