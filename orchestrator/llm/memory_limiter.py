"""An LLM limiter in this process's memory: the rules of ``lua/limiter_acquire.lua`` and
``lua/limiter_release.lua`` in Python, on a clock the caller may control.

Per API key: a concurrency semaphore of leases (each expiring ``lease_seconds`` after its
grant), a request log (RPM over a rolling 60 s), a token log (TPM over the same window,
each call's reservation settled on release) and a cooldown. Callers wait in arrival order;
only the head of the line is admitted, to the key with the most headroom. For tests and
single-process use; the fleet's limiter is :class:`~orchestrator.llm.limiter.RedisLimiter`.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import StepFailed, TransientStepError
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.limiter import HEARTBEAT, WAIT_SAMPLES, WAITER_TTL, Lease

WINDOW_MS = 60_000


@dataclass
class _KeyLog:
    leases: dict[str, int] = field(default_factory=dict)  # lease -> expiry ms
    requests: dict[str, int] = field(default_factory=dict)  # lease -> start ms
    tokens: dict[str, int] = field(default_factory=dict)  # lease -> tokens, in the window
    cooldown_until: int = 0


@dataclass(frozen=True)
class _Answer:
    state: str  # granted | wait | nokeys | toolarge
    value: int = 0  # key index, ms until capacity could exist, or the largest TPM


class MemoryLimiter:
    """Admission to one provider's keys. ``clock``: seconds since the epoch (the limiter's
    windows, leases and cooldowns follow it; ``max_wait`` is real time, as in Redis)."""

    def __init__(self, provider: Provider, *, lease_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.lease_ms = int(lease_seconds * 1000)
        self.clock = clock
        self._logs = {key.id: _KeyLog() for key in provider.keys}
        self._line: dict[str, int] = {}  # waiter -> alive until ms, in arrival order
        self._revoked: set[str] = set()
        self._waits: list[float] = []
        self._changed = threading.Condition()
        self._generation = 0

    def _now_ms(self) -> int:
        return math.floor(self.clock() * 1000 + 1e-6)

    def _wake(self) -> None:
        """Called holding ``_changed``: waiters look again."""
        self._generation += 1
        self._changed.notify_all()

    def _attempt(self, waiter: str, lease: str, wanted: int) -> _Answer:
        now = self._now_ms()
        self._line[waiter] = now + int(WAITER_TTL * 1000)
        # Waiters whose process died stop refreshing their deadline: drop them from the head.
        while self._line:
            head = next(iter(self._line))
            if self._line[head] >= now:
                break
            del self._line[head]
        if next(iter(self._line), None) != waiter:
            return _Answer("wait", 0)
        best, best_room = -1, -1.0
        soonest: int | None = None
        usable, largest_tpm = 0, 0
        for index, key in enumerate(self.provider.keys):
            if key.id in self._revoked:
                continue
            usable += 1
            largest_tpm = max(largest_tpm, key.tpm)
            wait = self._key_wait(key, now, wanted)
            if wait is None:
                log = self._logs[key.id]
                active, recent = len(log.leases), len(log.requests)
                used = sum(log.tokens.values())
                room = min((key.concurrency - active) / key.concurrency,
                           (key.rpm - recent) / key.rpm, (key.tpm - used - wanted) / key.tpm)
                if room > best_room:
                    best, best_room = index, room
            elif wait > 0 and (soonest is None or wait < soonest):
                soonest = wait
        if usable == 0:
            return _Answer("nokeys")
        if wanted > largest_tpm:
            return _Answer("toolarge", largest_tpm)
        if best < 0:
            return _Answer("wait", soonest or 0)
        log = self._logs[self.provider.keys[best].id]
        log.leases[lease] = now + self.lease_ms
        log.requests[lease] = now
        log.tokens[lease] = wanted
        del self._line[waiter]
        self._wake()  # the next in line may fit too
        return _Answer("granted", best)

    def _key_wait(self, key: ApiKey, now: int, wanted: int) -> int | None:
        """None when ``key`` can take the call now; else ms until it could (0: unknown,
        a release will tell)."""
        log = self._logs[key.id]
        if log.cooldown_until > now:
            return log.cooldown_until - now
        log.leases = {k: v for k, v in log.leases.items() if v > now}
        # Requests older than the window leave it, and so do their tokens.
        for member in [m for m, start in log.requests.items() if start <= now - WINDOW_MS]:
            del log.requests[member]
            log.tokens.pop(member, None)
        active, recent = len(log.leases), len(log.requests)
        used = sum(log.tokens.values())
        if active < key.concurrency and recent < key.rpm and used + wanted <= key.tpm:
            return None
        wait = 0
        by_start = sorted(log.requests.items(), key=lambda item: (item[1], item[0]))
        if recent >= key.rpm:
            wait = by_start[0][1] + WINDOW_MS - now
        if used + wanted > key.tpm:
            need, freed = used + wanted - key.tpm, 0
            for member, start in by_start:
                freed += log.tokens.get(member, 0)
                if freed >= need:
                    wait = max(wait, start + WINDOW_MS - now)
                    break
        # A full semaphore needs no timer: the release that frees a slot wakes us.
        return wait

    def acquire(self, tokens: int, *, max_wait: float) -> Lease:
        """Wait in line until some key can take a call of ``tokens``; returns its lease.

        Raises ``TransientStepError`` after ``max_wait`` seconds in line, ``StepFailed``
        when every key is revoked or the call is larger than any key's TPM.
        """
        waiter, lease = uuid.uuid4().hex, uuid.uuid4().hex
        started = time.monotonic()
        deadline = started + max_wait
        try:
            while True:
                with self._changed:
                    answer = self._attempt(waiter, lease, tokens)
                    seen = self._generation
                if answer.state == "granted":
                    waited = time.monotonic() - started
                    self._waits.insert(0, float(f"{waited:.4f}"))
                    del self._waits[WAIT_SAMPLES:]
                    return Lease(lease, self.provider.keys[answer.value], tokens, waited)
                if answer.state == "nokeys":
                    raise StepFailed(
                        f"LLM provider {self.provider.name}: every API key is revoked")
                if answer.state == "toolarge":
                    raise StepFailed(
                        f"LLM call of {tokens} tokens exceeds every key's TPM ({answer.value})")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransientStepError(
                        f"LLM limiter: no capacity within {max_wait:.0f}s", retry_after=1.0)
                hint = answer.value / 1000.0
                pause = min(HEARTBEAT, remaining, hint if hint > 0 else HEARTBEAT)
                with self._changed:
                    if self._generation == seen:
                        self._changed.wait(timeout=max(pause, 0.01))
        except BaseException:
            with self._changed:
                self._line.pop(waiter, None)
                self._wake()
            raise

    def release(self, lease: Lease, actual_tokens: int | None) -> None:
        """End ``lease``; settle its tokens to ``actual_tokens`` (None: keep the estimate)."""
        with self._changed:
            log = self._logs[lease.key.id]
            log.leases.pop(lease.id, None)
            # Absent when the request already left the window: nothing left to settle.
            if actual_tokens is not None and lease.id in log.tokens:
                log.tokens[lease.id] = actual_tokens
            self._wake()

    def cool_down(self, key: ApiKey, seconds: float) -> None:
        """Keep ``key`` out of admission for ``seconds`` (after a 429 from the provider)."""
        with self._changed:
            log = self._logs[key.id]
            log.cooldown_until = max(log.cooldown_until, self._now_ms() + int(seconds * 1000))
            self._wake()

    def revoke(self, key: ApiKey) -> None:
        """Take ``key`` out of rotation (after a 401/403)."""
        with self._changed:
            self._revoked.add(key.id)
            self._wake()

    def revoked(self) -> set[str]:
        with self._changed:
            return set(self._revoked)

    def reset_wait_samples(self) -> None:
        with self._changed:
            self._waits.clear()

    def wait_samples(self) -> list[float]:
        """Recent seconds-in-line of admitted calls, newest first."""
        with self._changed:
            return list(self._waits)

    def in_flight(self) -> dict[str, int]:
        """Leases held per key id right now (expired ones not counted)."""
        with self._changed:
            now = self._now_ms()
            return {key.id: sum(1 for expiry in self._logs[key.id].leases.values()
                                if expiry >= now)
                    for key in self.provider.keys}
