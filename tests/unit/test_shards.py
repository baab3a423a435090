"""Shard choice for write-back state: rendezvous hashing over the shards' names."""

from __future__ import annotations

import pytest

from orchestrator.state.shards import shard_for, shard_name

SHARDS = [f"127.0.0.1:{7000 + i}/0" for i in range(4)]
KEYS = [f"customer:{i}" for i in range(4_000)]


def _owners(shards: list[str]) -> dict[str, str]:
    return {key: shards[shard_for(key, shards)] for key in KEYS}


def test_a_key_always_goes_to_the_same_shard_whatever_the_list_order() -> None:
    assert _owners(SHARDS) == _owners(SHARDS)
    assert _owners(SHARDS) == _owners(list(reversed(SHARDS)))


def test_keys_spread_over_every_shard() -> None:
    counts = {shard: 0 for shard in SHARDS}
    for owner in _owners(SHARDS).values():
        counts[owner] += 1
    assert all(abs(n - len(KEYS) / 4) < len(KEYS) * 0.05 for n in counts.values())


def test_adding_a_shard_moves_about_one_nth_of_the_keys_and_only_to_it() -> None:
    before = _owners(SHARDS)
    grown = [*SHARDS, "127.0.0.1:7004/0"]
    after = _owners(grown)
    moved = [key for key in KEYS if before[key] != after[key]]
    assert {after[key] for key in moved} == {"127.0.0.1:7004/0"}
    assert abs(len(moved) / len(KEYS) - 1 / 5) < 0.03


def test_removing_a_shard_moves_only_its_own_keys() -> None:
    before = _owners(SHARDS)
    after = _owners(SHARDS[1:])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == SHARDS[0]}


def test_shard_is_named_by_host_port_and_db_never_its_password() -> None:
    assert shard_name("redis://:s3cret@10.0.0.5:7001/2") == "10.0.0.5:7001/2"
    assert shard_name("redis://cache") == "cache:6379/0"


def test_no_shard_is_refused() -> None:
    with pytest.raises(ValueError, match="no memory-layer shard"):
        shard_for("customer:1", [])
