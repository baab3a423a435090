"""An LLM limiter in this process's memory: the rules of ``lua/limiter_acquire.lua`` and
``lua/limiter_release.lua`` in Python, on a clock the caller may control.

Per API key: a concurrency semaphore of leases (each expiring ``lease_seconds`` after its
grant), a request log (RPM over a rolling 60 s), a token log (TPM over the same window,
each call's reservation settled on release), a cooldown and, for a key the provider
refused, its cool-off and its one probe (``lua/limiter_take_out.lua``). Callers wait in
arrival order; only the head of the line is admitted, to the key with the most headroom (a
key due for its probe first). For tests and single-process use; the fleet's limiter is
:class:`~orchestrator.llm.limiter.RedisLimiter`.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import InvocationCancelled, StepFailed, TransientStepError
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.limiter import (
    DEFAULT_COOLOFF,
    HEARTBEAT,
    WAIT_SAMPLES,
    WAITER_TTL,
    WINDOW_MS,
    Lease,
)
from orchestrator.llm.rotation import KeyOut, KeyStatus, NoUsableKey, cooloff_seconds, key_state


@dataclass
class _KeyLog:
    leases: dict[str, int] = field(default_factory=dict)  # lease -> expiry ms
    requests: dict[str, int] = field(default_factory=dict)  # lease -> start ms
    tokens: dict[str, int] = field(default_factory=dict)  # lease -> tokens, in the window
    cooldown_until: int = 0
    rate_probe_until: int = 0  # after the cooldown and until then, one call at a time
    probe: tuple[str, int] | None = None  # the probing lease and its expiry ms


@dataclass(frozen=True)
class _Answer:
    state: str  # granted | wait | nokeys | toolarge
    value: int = 0  # key index, ms until capacity could exist (or a probe may go), or the
    # largest TPM
    probe: bool = False


class MemoryLimiter:
    """Admission to one provider's keys. ``clock``: seconds since the epoch (the limiter's
    windows, leases and cooldowns follow it; ``max_wait`` is real time, as in Redis)."""

    def __init__(self, provider: Provider, *, lease_seconds: float,
                 cooloff: float = DEFAULT_COOLOFF,
                 clock: Callable[[], float] = time.time, window_margin: float = 0.0) -> None:
        self.provider = provider
        self.window_ms = WINDOW_MS + int(window_margin * 1000)
        self.lease_ms = int(lease_seconds * 1000)
        self.cooloff = cooloff
        self.clock = clock
        self._logs = {key.id: _KeyLog() for key in provider.keys}
        self._line: dict[str, int] = {}  # waiter -> alive until ms, in arrival order
        self._out: dict[str, KeyOut] = {}
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
        best, best_room, best_rate_probe = -1, -1.0, False
        probe_pick = -1
        soonest: int | None = None
        next_probe: int | None = None
        usable, largest_tpm = 0, 0
        for index, key in enumerate(self.provider.keys):
            # A key out of rotation is cooling off, or due: then exactly one call probes it.
            out, due = self._out.get(key.id), False
            if out is not None:
                if out.probe_at_ms > now:
                    cooling = out.probe_at_ms - now
                    next_probe = cooling if next_probe is None else min(next_probe, cooling)
                    continue
                probe = self._logs[key.id].probe
                if probe is not None and probe[1] > now:
                    # Its probe is in flight: the outcome decides, and wakes the line.
                    usable += 1
                    largest_tpm = max(largest_tpm, key.tpm)
                    probe_left = probe[1] - now
                    soonest = probe_left if soonest is None else min(soonest, probe_left)
                    continue
                due = True
            usable += 1
            largest_tpm = max(largest_tpm, key.tpm)
            wait = self._key_wait(key, now, wanted)
            if wait is None:
                log = self._logs[key.id]
                active, recent = len(log.leases), len(log.requests)
                used = sum(log.tokens.values())
                room = min((key.concurrency - active) / key.concurrency,
                           (key.rpm - recent) / key.rpm, (key.tpm - used - wanted) / key.tpm)
                # A due key is probed before any other is used: it comes back soonest.
                if due:
                    if probe_pick < 0:
                        probe_pick = index
                elif room > best_room:
                    best, best_room = index, room
                    best_rate_probe = self._logs[key.id].rate_probe_until > now
            elif wait > 0 and (soonest is None or wait < soonest):
                soonest = wait
        if usable == 0:
            return _Answer("nokeys", next_probe or 0)
        if wanted > largest_tpm:
            return _Answer("toolarge", largest_tpm)
        probing = probe_pick >= 0
        if probing:
            best, best_rate_probe = probe_pick, False
        if best < 0:
            # A key whose cool-off ends first may be probed then: look again at that time.
            if next_probe is not None and (soonest is None or next_probe < soonest):
                soonest = next_probe
            return _Answer("wait", soonest or 0)
        log = self._logs[self.provider.keys[best].id]
        log.leases[lease] = now + self.lease_ms
        log.requests[lease] = now
        log.tokens[lease] = wanted
        if probing or best_rate_probe:
            log.probe = (lease, now + self.lease_ms)
        del self._line[waiter]
        self._wake()  # the next in line may fit too
        return _Answer("granted", best, probe=probing)

    def _key_wait(self, key: ApiKey, now: int, wanted: int) -> int | None:
        """None when ``key`` can take the call now; else ms until it could (0: unknown,
        a release will tell)."""
        log = self._logs[key.id]
        if log.cooldown_until > now:
            return log.cooldown_until - now
        if log.rate_probe_until > now and log.probe is not None and log.probe[1] > now:
            return 0  # one call is probing the provider's window: its answer wakes us
        log.leases = {k: v for k, v in log.leases.items() if v > now}
        # Requests older than the window leave it, and so do their tokens.
        for member in [m for m, start in log.requests.items()
                       if start <= now - self.window_ms]:
            del log.requests[member]
            log.tokens.pop(member, None)
        active, recent = len(log.leases), len(log.requests)
        used = sum(log.tokens.values())
        if active < key.concurrency and recent < key.rpm and used + wanted <= key.tpm:
            return None
        wait = 0
        by_start = sorted(log.requests.items(), key=lambda item: (item[1], item[0]))
        if recent >= key.rpm:
            wait = by_start[0][1] + self.window_ms - now
        if used + wanted > key.tpm:
            need, freed = used + wanted - key.tpm, 0
            for member, start in by_start:
                freed += log.tokens.get(member, 0)
                if freed >= need:
                    wait = max(wait, start + self.window_ms - now)
                    break
        # A full semaphore needs no timer: the release that frees a slot wakes us.
        return wait

    def acquire(self, tokens: int, *, max_wait: float,
                should_stop: Callable[[], bool] | None = None) -> Lease:
        """Wait in line until some key can take a call of ``tokens``; returns its lease.

        Raises ``TransientStepError`` after ``max_wait`` seconds in line, ``NoUsableKey``
        (an outage) when every key is out of rotation and none may be probed yet,
        ``StepFailed`` when the call is larger than any key's TPM.
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
                    return Lease(lease, self.provider.keys[answer.value], tokens, waited,
                                 probe=answer.probe)
                if answer.state == "nokeys":
                    with self._changed:
                        out = dict(self._out)
                    raise NoUsableKey(self.provider.name, out, self._now_ms())
                if answer.state == "toolarge":
                    raise StepFailed(
                        f"LLM call of {tokens} tokens exceeds every key's TPM ({answer.value})")
                if should_stop is not None and should_stop():
                    raise InvocationCancelled("cancelled while waiting for LLM capacity")
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
            now = self._now_ms()
            log = self._logs[lease.key.id]
            log.leases.pop(lease.id, None)
            # The request counts in the minute from its completion too.
            if lease.id in log.requests:
                log.requests[lease.id] = max(log.requests[lease.id], now)
            # Absent when the request already left the window: nothing left to settle.
            if actual_tokens is not None and lease.id in log.tokens:
                log.tokens[lease.id] = actual_tokens
            # A probe that neither brought its key back nor sent it back (a 429, a 5xx):
            # the key stays due, and the next call in line probes it.
            if log.probe is not None and log.probe[0] == lease.id:
                log.probe = None
                # A probe after a 429 that got an answer: the window has room again.
                if actual_tokens is not None and log.cooldown_until <= now:
                    log.rate_probe_until = 0
            self._wake()

    def cool_down(self, key: ApiKey, seconds: float, *,
                  probe_until: float | None = None) -> None:
        """Keep ``key`` out of admission for ``seconds`` (after a 429 from the provider).
        ``probe_until``: from then until ``probe_until`` seconds from now, one call at a
        time probes the key; the first answered probe ends the cool-down."""
        with self._changed:
            now = self._now_ms()
            log = self._logs[key.id]
            log.cooldown_until = max(log.cooldown_until, now + int(seconds * 1000))
            if probe_until is not None and probe_until > seconds:
                log.rate_probe_until = max(log.rate_probe_until,
                                           now + int(probe_until * 1000))
            self._wake()

    def take_out(self, key: ApiKey, status: int, *, lease: Lease | None = None) -> KeyOut | None:
        """``key`` was refused with ``status`` (401/403) on ``lease``: out of rotation for
        the cool-off, or, when ``lease`` was its probe, for twice the last one (capped).
        Returns the record, or None when the key was already out (the same incident)."""
        with self._changed:
            now = self._now_ms()
            log = self._logs[key.id]
            probe = (lease is not None and log.probe is not None
                     and log.probe[0] == lease.id and log.probe[1] > now)
            out = self._out.get(key.id)
            first, strikes = now, 1
            if out is not None:
                if not probe:
                    return None
                first, strikes = out.first_ms, out.strikes + 1
            if probe:
                log.probe = None
            cooloff = cooloff_seconds(self.cooloff, strikes)
            record = KeyOut(status, first, now, now + math.floor(cooloff * 1000), strikes)
            self._out[key.id] = record
            self._wake()
            return record

    def restore(self, key_id: str) -> bool:
        """Return the key with fingerprint ``key_id`` to rotation now; False when it was
        in rotation."""
        with self._changed:
            if key_id in self._logs:
                self._logs[key_id].probe = None
            removed = self._out.pop(key_id, None) is not None
            self._wake()
            return removed

    def out_of_rotation(self) -> dict[str, KeyOut]:
        """The keys out of rotation now, by fingerprint."""
        with self._changed:
            return dict(self._out)

    def revoked(self) -> set[str]:
        """Fingerprints of the keys out of rotation now."""
        with self._changed:
            return set(self._out)

    def statuses(self) -> list[KeyStatus]:
        """Each key's state and headroom now, in the provider's order."""
        with self._changed:
            now = self._now_ms()
            found = []
            for key in self.provider.keys:
                log = self._logs[key.id]
                recent = [m for m, start in log.requests.items()
                          if start > now - self.window_ms]
                used = sum(log.tokens.get(m, 0) for m in recent)
                record = self._out.get(key.id)
                cooling_ms = max(0, log.cooldown_until - now)
                probing = log.probe is not None and log.probe[1] > now
                found.append(KeyStatus(
                    provider=self.provider.name, key=key.id,
                    state=key_state(record, probing=probing, cooling_ms=cooling_ms),
                    cooling_s=cooling_ms / 1000,
                    out=record,
                    next_probe_in_s=record.next_probe_in(now) if record else None,
                    in_flight=sum(1 for expiry in log.leases.values() if expiry >= now),
                    concurrency=key.concurrency,
                    requests_left=max(0, key.rpm - len(recent)),
                    tokens_left=max(0, key.tpm - used)))
            return found

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
