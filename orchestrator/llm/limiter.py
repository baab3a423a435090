"""The fleet-wide LLM limiter: holds calls until the provider has capacity for them.

Per provider pool (base URL + model) and per API key it keeps, in Redis, a concurrency
semaphore of leases, a request log (RPM over a rolling 60 s) and a token log (TPM over
the same window); Redis ``TIME`` is the one clock. Callers wait in arrival order: only
the head of the line may be admitted, and it goes to the key with the most headroom.

Waiting never spins: a waiter blocks on its own wake-up list, woken by the release that
freed a slot or by the admission just ahead of it, or at the moment the window frees
capacity; it wakes at least every ``HEARTBEAT`` seconds to prove it is alive. A worker
that dies holding a lease frees it when the lease expires; one that dies waiting is
dropped from the line within ``WAITER_TTL``.

A key the provider refuses (401/403) leaves the rotation for a cool-off, then exactly one
call in the fleet probes it (the rules are :mod:`orchestrator.llm.rotation`'s). With every
key out and none due, admission raises ``NoUsableKey``, an outage the step holds through.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from orchestrator.constants import (
    LLM_ALIVE,
    LLM_KEY,
    LLM_KEY_COOLOFF_CAP_SECONDS,
    LLM_KEY_PARTS,
    LLM_OUT,
    LLM_TICKET,
    LLM_WAITERS,
    LLM_WAITS,
    LLM_WAKE,
)
from orchestrator.errors import InvocationCancelled, StepFailed, TransientStepError
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.rotation import KeyOut, KeyStatus, NoUsableKey, key_state
from orchestrator.lua import script

HEARTBEAT = 1.0
WAITER_TTL = 5.0
WAIT_SAMPLES = 5000
WINDOW_MS = 60_000
DEFAULT_COOLOFF = 300.0  # ORCH_LLM_KEY_COOLOFF's default


@dataclass(frozen=True)
class Lease:
    """Admission to call ``key`` once; ``waited`` seconds were spent in line. ``probe``:
    this call is the one that tries ``key`` back after its cool-off."""

    id: str
    key: ApiKey
    tokens: int
    waited: float
    probe: bool = False


class Limiter(Protocol):
    """Admission to one provider's keys: :class:`RedisLimiter` for the fleet,
    :class:`~orchestrator.llm.memory_limiter.MemoryLimiter` in one process (tests)."""

    provider: Provider

    def acquire(self, tokens: int, *, max_wait: float,
                should_stop: Callable[[], bool] | None = None) -> Lease:
        """Wait in line until some key can take a call of ``tokens``; returns its lease.

        Raises ``TransientStepError`` after ``max_wait`` seconds in line, ``NoUsableKey``
        (an outage) when every key is out of rotation and none may be probed yet,
        ``StepFailed`` when the call is larger than any key's TPM.
        """
        ...

    def release(self, lease: Lease, actual_tokens: int | None) -> None:
        """End ``lease``; settle its tokens to ``actual_tokens`` (None: keep the estimate).
        A probe lease still held ends without a verdict: the next call probes again."""
        ...

    def cool_down(self, key: ApiKey, seconds: float, *,
                  probe_until: float | None = None) -> None:
        """Keep ``key`` out of admission for ``seconds`` (after a 429 from the provider).
        ``probe_until``: from then until ``probe_until`` seconds from now, one call at a
        time probes the key; the first answered probe ends the cool-down."""
        ...

    def take_out(self, key: ApiKey, status: int, *, lease: Lease | None = None) -> KeyOut | None:
        """``key`` was refused with ``status`` (401/403) on ``lease``: out of rotation for
        the cool-off, or, when ``lease`` was its probe, for twice the last one (capped).
        Returns the record, or None when the key was already out (the same incident)."""
        ...

    def restore(self, key_id: str) -> bool:
        """Return the key with fingerprint ``key_id`` to rotation now; False when it was
        in rotation."""
        ...

    def out_of_rotation(self) -> dict[str, KeyOut]:
        """The keys out of rotation now, by fingerprint."""
        ...

    def revoked(self) -> set[str]:
        """Fingerprints of the keys out of rotation now."""
        ...

    def statuses(self) -> list[KeyStatus]:
        """Each key's state and headroom now, in the provider's order."""
        ...

    def reset_wait_samples(self) -> None: ...

    def wait_samples(self) -> list[float]:
        """Recent seconds-in-line of admitted calls, newest first."""
        ...

    def in_flight(self) -> dict[str, int]:
        """Leases held per key id right now (expired ones not counted)."""
        ...


class RedisLimiter:
    """Admission to one provider's keys, shared by every process through Redis."""

    def __init__(self, client: redis.Redis, provider: Provider, *, lease_seconds: float,
                 cooloff: float = DEFAULT_COOLOFF, window_margin: float = 0.0) -> None:
        """``cooloff``: seconds a refused key stays out before its first probe;
        ``window_margin``: seconds a call keeps counting past the provider's minute."""
        self.client = client
        self.window_ms = WINDOW_MS + int(window_margin * 1000)
        self.provider = provider
        self.lease_ms = int(lease_seconds * 1000)
        self.cooloff_ms = int(cooloff * 1000)
        pool = provider.pool
        self._waiters = LLM_WAITERS.format(pool=pool)
        self._alive = LLM_ALIVE.format(pool=pool)
        self._ticket = LLM_TICKET.format(pool=pool)
        self._out = LLM_OUT.format(pool=pool)
        self._wake = LLM_WAKE.format(pool=pool)
        self._waits = LLM_WAITS.format(pool=pool)
        self._key_names = {
            k.id: [f"{LLM_KEY.format(pool=pool, key=k.id)}:{part}" for part in LLM_KEY_PARTS]
            for k in provider.keys
        }
        self._acquire = script(client, "orchestrator.llm", "limiter_acquire")
        self._release = script(client, "orchestrator.llm", "limiter_release")
        self._take_out = script(client, "orchestrator.llm", "limiter_take_out")

    def _keys(self) -> list[str]:
        names = [self._waiters, self._alive, self._ticket, self._out]
        for key in self.provider.keys:
            names += self._key_names[key.id]
        return names

    def _args(self, waiter: str, lease: str, tokens: int) -> list[object]:
        args: list[object] = [waiter, lease, tokens, self.lease_ms, int(WAITER_TTL * 1000),
                              len(self.provider.keys)]
        for key in self.provider.keys:
            args += [key.id, key.rpm, key.tpm, key.concurrency]
        args += [self._wake, self.window_ms, self._waits, "0", WAIT_SAMPLES]
        return args

    def acquire(self, tokens: int, *, max_wait: float,
                should_stop: Callable[[], bool] | None = None) -> Lease:
        """Wait in line until some key can take a call of ``tokens``; returns its lease.

        Raises ``TransientStepError`` after ``max_wait`` seconds in line (the step is then
        retried, its place given up), ``NoUsableKey`` (an outage) when every key is out of
        rotation and none may be probed yet, ``StepFailed`` when the call is larger than
        any key's TPM.
        """
        waiter = uuid.uuid4().hex
        lease = uuid.uuid4().hex
        started = time.monotonic()
        deadline = started + max_wait
        wake = self._wake + waiter
        keys = self._keys()
        args = self._args(waiter, lease, tokens)
        granted = False
        try:
            while True:
                args[-2] = f"{time.monotonic() - started:.4f}"
                reply = self._acquire(keys=keys, args=args)
                state = reply[0].decode()
                if state == "granted":
                    # The script recorded the wait and dropped our wake-up list.
                    granted = True
                    waited = float(str(args[-2]))
                    return Lease(lease, self.provider.keys[int(reply[1]) - 1], tokens, waited,
                                 probe=reply[3] == b"1")
                if state == "nokeys":
                    raise NoUsableKey(self.provider.name, self.out_of_rotation(),
                                      self._now_ms())
                if state == "toolarge":
                    raise StepFailed(
                        f"LLM call of {tokens} tokens exceeds every key's TPM ({reply[1].decode()})"
                    )
                if should_stop is not None and should_stop():
                    raise InvocationCancelled("cancelled while waiting for LLM capacity")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransientStepError(
                        f"LLM limiter: no capacity within {max_wait:.0f}s", retry_after=1.0)
                hint = int(reply[1]) / 1000.0
                pause = min(HEARTBEAT, remaining, hint if hint > 0 else HEARTBEAT)
                self.client.blpop([wake], timeout=max(pause, 0.01))
        except BaseException:
            self._leave(waiter)
            raise
        finally:
            if not granted:
                self.client.delete(wake)

    def _leave(self, waiter: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self._waiters, waiter)
        pipe.hdel(self._alive, waiter)
        pipe.execute()
        self._wake_head()

    def _wake_head(self) -> None:
        head = self.client.zrange(self._waiters, 0, 0)
        if head:
            self.client.lpush(self._wake + head[0].decode(), "1")
            self.client.pexpire(self._wake + head[0].decode(), 10_000)

    def release(self, lease: Lease, actual_tokens: int | None) -> None:
        """End ``lease``; settle its tokens to ``actual_tokens`` (None: keep the estimate)."""
        leases, reqs, toks, toksum, cool, probe = self._key_names[lease.key.id]
        self._release(
            keys=[leases, toks, toksum, self._waiters, self._wake, probe, reqs, cool],
            args=[lease.id, -1 if actual_tokens is None else actual_tokens],
        )

    def cool_down(self, key: ApiKey, seconds: float, *,
                  probe_until: float | None = None) -> None:
        """Keep ``key`` out of admission for ``seconds`` (after a 429 from the provider).
        ``probe_until``: from then until ``probe_until`` seconds from now, one call at a
        time probes the key; the first answered probe ends the cool-down."""
        cool = self._key_names[key.id][4]
        now = self._now_ms()
        until_ms = now + int(seconds * 1000)
        probing = probe_until is not None and probe_until > seconds
        end_ms = now + int((probe_until if probing and probe_until else seconds) * 1000)
        pipe = self.client.pipeline(transaction=True)
        pipe.get(cool)
        pipe.pttl(cool)
        raw, ttl = pipe.execute()
        current_until, current_probe = _cooldown(raw)
        # Merged with a cool-down already set: the later end, and probing if either probes.
        if current_probe and int(ttl) > 0:
            probing, end_ms = True, max(end_ms, now + int(ttl))
        until_ms = max(until_ms, current_until)
        value = f"{until_ms}|p" if probing else str(until_ms)
        self.client.set(cool, value, px=max(1, end_ms - now, until_ms - now))
        self._wake_head()

    def _now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def take_out(self, key: ApiKey, status: int, *, lease: Lease | None = None) -> KeyOut | None:
        """``key`` was refused with ``status`` (401/403) on ``lease``: out of rotation for
        the whole fleet for the cool-off, or, when ``lease`` was its probe, for twice the
        last one (capped). Returns the record, or None when the key was already out."""
        record = self._take_out(
            keys=[self._out, self._key_names[key.id][5], self._waiters, self._wake],
            args=[key.id, status, lease.id if lease is not None else "", self.cooloff_ms,
                  int(LLM_KEY_COOLOFF_CAP_SECONDS * 1000)])
        return KeyOut.decode(record) if record else None

    def restore(self, key_id: str) -> bool:
        """Return the key with fingerprint ``key_id`` to rotation for the whole fleet now;
        False when it was in rotation."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self._out, key_id)
        if key_id in self._key_names:
            pipe.delete(self._key_names[key_id][5])
        removed = pipe.execute()[0]
        self._wake_head()
        return bool(removed)

    def out_of_rotation(self) -> dict[str, KeyOut]:
        """The keys out of rotation now, by fingerprint."""
        return {k.decode(): KeyOut.decode(v) for k, v in self.client.hgetall(self._out).items()}

    def revoked(self) -> set[str]:
        """Fingerprints of the keys out of rotation now."""
        return set(self.out_of_rotation())

    def statuses(self) -> list[KeyStatus]:
        """Each key's state and headroom now, in the provider's order (read, not locked:
        a snapshot for operators)."""
        now = self._now_ms()
        out = self.out_of_rotation()
        pipe = self.client.pipeline(transaction=True)
        for key in self.provider.keys:
            leases, reqs, _toks, _toksum, cool, probe = self._key_names[key.id]
            pipe.zcount(leases, now, "+inf")
            pipe.zrangebyscore(reqs, f"({now - self.window_ms}", "+inf")
            pipe.get(cool)
            pipe.exists(probe)
        replies = pipe.execute()
        found = []
        for index, key in enumerate(self.provider.keys):
            in_flight, recent, cooled, probing = replies[index * 4: index * 4 + 4]
            toks = self._key_names[key.id][2]
            used = sum(int(v or 0) for v in self.client.hmget(toks, recent)) if recent else 0
            record = out.get(key.id)
            cooling_ms = max(0, _cooldown(cooled)[0] - now)
            found.append(KeyStatus(
                provider=self.provider.name, key=key.id,
                state=key_state(record, probing=bool(probing), cooling_ms=cooling_ms),
                cooling_s=cooling_ms / 1000,
                out=record, next_probe_in_s=record.next_probe_in(now) if record else None,
                in_flight=int(in_flight), concurrency=key.concurrency,
                requests_left=max(0, key.rpm - len(recent)),
                tokens_left=max(0, key.tpm - used)))
        return found

    def reset_wait_samples(self) -> None:
        self.client.delete(self._waits)

    def wait_samples(self) -> list[float]:
        """Recent seconds-in-line of admitted calls, newest first."""
        return [float(v) for v in self.client.lrange(self._waits, 0, -1)]

    def in_flight(self) -> dict[str, int]:
        """Leases held per key id right now (expired ones not counted)."""
        now_ms = self._now_ms()
        return {
            key.id: int(self.client.zcount(self._key_names[key.id][0], now_ms, "+inf"))
            for key in self.provider.keys
        }


def _cooldown(value: bytes | str | None) -> tuple[int, bool]:
    """A cooldown string: (until ms, whether one call at a time probes after it)."""
    if not value:
        return 0, False
    text = value.decode() if isinstance(value, bytes) else value
    until, _, flag = text.partition("|")
    return int(until), flag == "p"
