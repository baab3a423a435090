"""Providers and their API keys. A key is known everywhere by its fingerprint only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for an API key: safe in logs and metrics."""
    return "k-" + hashlib.sha256(secret.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ApiKey:
    secret: str = field(repr=False)
    rpm: int
    tpm: int
    concurrency: int

    @property
    def id(self) -> str:
        return fingerprint(self.secret)


@dataclass(frozen=True)
class Provider:
    """One OpenAI-compatible endpoint and model, with its keys and their limits."""

    name: str
    base_url: str
    model: str
    keys: tuple[ApiKey, ...]

    @property
    def pool(self) -> str:
        """The limiter's name for this provider + model (no secret in it)."""
        return hashlib.sha256(f"{self.base_url}|{self.model}".encode()).hexdigest()[:12]

    def key(self, key_id: str) -> ApiKey:
        return next(k for k in self.keys if k.id == key_id)
