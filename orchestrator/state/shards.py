"""Which memory-layer shard holds a key: rendezvous (highest-random-weight) hashing.

Every key goes to the shard with the highest hash of (shard, key). Adding a shard moves
only the keys that now score highest on the new one (about 1/n of them); removing one
moves only its own keys. Shards are named by their URL without credentials.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit


def shard_name(url: str) -> str:
    """A shard's stable identity: host, port and db of its URL (never its password)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def _weight(shard: str, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{shard}|{key}".encode(), digest_size=8).digest(),
                          "big")


def shard_for(key: str, shards: list[str]) -> int:
    """Index in ``shards`` (shard names) of the shard that owns ``key``."""
    if not shards:
        raise ValueError("no memory-layer shard configured")
    if len(shards) == 1:
        return 0  # no hashing on every read and write of a single-shard layer
    return max(range(len(shards)), key=lambda i: _weight(shards[i], key))
