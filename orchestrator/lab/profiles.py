"""The two profiles on the same traffic: ``production`` (the project on a local fleet)
and ``pilot`` (:mod:`orchestrator.lab.pilot`). Each starts its fleet, submits one
arrival, tells what is unfinished, collects outcomes and customer records, and is the
:class:`~orchestrator.lab.faults.FaultTarget` of its run."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orchestrator.devstack.netns import at
from orchestrator.lab.hosts import ClaimOwners, LabHosts, celery_nodes, distinct_hosts
from orchestrator.lab.outcome import Fate, Outcome
from orchestrator.lab.scenario import Scenario
from orchestrator.lab.schedule import Arrival

log = logging.getLogger(__name__)
SUBMIT_PATIENCE = 10.0
"""Seconds a producer retries a submit the services refuse (same idempotency key)."""


@dataclass
class LabServices:
    """The lab's own Redis and PostgreSQL (restartable), this profile's simulators, and
    where the worker groups run (``hosts``: every URL is at ``hosts.address``)."""

    redis: Any  # EmbeddedRedis
    postgres: Any  # EmbeddedPostgres
    llm_url: str  # .../v1
    tools_url: str
    keys: tuple[str, ...]
    model: str
    log_dir: Path
    hosts: LabHosts = field(default_factory=lambda: LabHosts(None))

    @property
    def redis_url(self) -> str:
        return at(self.redis.url, self.hosts.address)

    @property
    def database_url(self) -> str:
        return at(self.postgres.url, self.hosts.address)


class Profile:
    """Shared faults (simulators, servers); subclasses run the fleet."""

    name = ""

    def __init__(self, lab: LabServices, scn: Scenario, run: str) -> None:
        self.lab = lab
        self.scn = scn
        self.run = run
        self.wall0 = time.time()
        self.accepted: dict[int, tuple[str, Arrival, float]] = {}
        self.rejected: list[Outcome] = []

    # -- faults shared by both profiles --------------------------------------------------
    def _admin(self, url: str, body: dict[str, Any]) -> None:
        httpx.post(url, json=body, timeout=5).raise_for_status()

    def tool_outage(self, on: bool) -> None:
        self._admin(f"{self.lab.tools_url}/admin/outage",
                    {"tool": "lookup_order", "mode": "hang" if on else None})

    def llm_storm(self, on: bool) -> None:
        base = self.lab.llm_url.removesuffix("/v1")
        c, rpm = self.scn.llm_concurrency, self.scn.llm_rpm
        self._admin(f"{base}/admin/config", {"concurrency": max(1, c // 4), "rpm": max(6, rpm // 8)}
                    if on else {"concurrency": c, "rpm": rpm})

    def llm_5xx(self, on: bool) -> None:
        self._admin(f"{self.lab.llm_url.removesuffix('/v1')}/admin/config", {"outage": on})

    def restart_redis(self, on: bool) -> None:
        if on:
            self.lab.redis.restart()

    def restart_postgres(self, on: bool) -> None:
        if on:
            self.lab.postgres.restart()

    def kill_worker(self, on: bool) -> None:
        raise NotImplementedError

    def kill_reconciler(self, on: bool) -> None:
        raise NotImplementedError

    # -- the run ---------------------------------------------------------------------------
    def lab_time(self, wall: float) -> float:
        return round(wall - self.wall0, 3)

    def start(self) -> Any:
        raise NotImplementedError

    def submit(self, arrival: Arrival) -> None:
        raise NotImplementedError

    def unfinished(self) -> int:
        raise NotImplementedError

    def queue_depth(self) -> int | None:
        raise NotImplementedError

    def breaker_states(self) -> dict[str, str]:
        return {}

    def sample(self) -> None:
        """Called by the sampler once a second (a profile's own observations)."""

    def hosts_evidence(self) -> dict[str, Any]:
        """Where the work ran: tasks per Celery node and the hosts among them, asked
        before the fleet stops."""
        nodes = celery_nodes(self.lab.redis_url)
        return {"celery_nodes": nodes, "node_hosts": distinct_hosts(nodes)}

    def outcomes(self) -> list[Outcome]:
        raise NotImplementedError

    def tickets_handled(self, customer_id: str) -> int:
        raise NotImplementedError


class ProductionProfile(Profile):
    """The project: support-triage on ``local_fleet`` (one worker per queue, a flusher, a
    reconciler), against the lab's servers and simulators."""

    name = "production"

    @contextmanager
    def start(self) -> Iterator[ProductionProfile]:
        from pydantic import SecretStr

        from orchestrator import runtime
        from orchestrator.devstack.fleet import local_fleet

        settings = runtime.current().settings.model_copy(update={
            "redis_url": self.lab.redis_url, "database_url": self.lab.database_url,
            "state_redis_urls": [self.lab.redis_url],
            "llm_base_url": self.lab.llm_url, "tools_url": self.lab.tools_url,
            "llm_api_keys": [SecretStr(k) for k in self.lab.keys],
            "llm_model": self.lab.model, "llm_concurrency": self.scn.llm_concurrency,
            "llm_rpm": self.scn.llm_rpm, "llm_tpm": 10_000_000,
            # The safety net at lab speed: a killed worker's steps come back in seconds.
            "stall_seconds": 15, "data_dir": self.lab.log_dir.parent / "fleet",
            # Leases at lab speed too: a step claim or a limiter lease whose release the
            # Redis restart refused lapses in 15 s (a minute by default), not past the
            # short run's deadline. (The limiter's lease is the call's timeout + 5 s.)
            "step_lease_seconds": 15, "llm_timeout": 10.0,
        })
        self.claims = ClaimOwners()
        with local_fleet(settings, simulators=False, hosts=self.lab.hosts.hosts) as fleet:
            self.fleet = fleet
            self.wall0 = time.time()
            yield self

    def submit(self, arrival: Arrival) -> None:
        import orchestrator
        from orchestrator.errors import Backpressure, ServiceError

        now = self.lab_time(time.time())
        deadline = time.monotonic() + SUBMIT_PATIENCE
        while True:
            try:
                inv = orchestrator.submit("support-triage", arrival.payload(self.run),
                                          idempotency_key=f"{self.run}-{arrival.index}")
            except Backpressure as exc:
                self.rejected.append(Outcome(arrival.index, arrival.customer_id, Fate.REFUSED,
                                             now, retry_after=exc.retry_after))
                return
            except ServiceError as exc:
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                self.rejected.append(Outcome(arrival.index, arrival.customer_id,
                                             Fate.SUBMIT_ERROR, now, cause=str(exc)[:80]))
                return
            self.accepted[arrival.index] = (inv, arrival, now)
            return

    def unfinished(self) -> int:
        from orchestrator import subsystems

        if not hasattr(self, "_done"):
            self._done: set[str] = set()
        pending = [inv for inv, _a, _t in self.accepted.values() if inv not in self._done]
        try:
            for i in range(0, len(pending), 500):
                statuses = subsystems.current().store.status_of(pending[i:i + 500])
                self._done.update(k for k, s in statuses.items() if s.finished)
        except Exception as exc:  # PostgreSQL restarting: ask again next time
            log.debug("status poll failed: %s", exc)
        return len(self.accepted) - len(self._done)

    def queue_depth(self) -> int | None:
        from config.celery import QUEUES
        from orchestrator import runtime

        try:
            redis = runtime.current().redis
            return sum(int(redis.llen(q)) for q in QUEUES)
        except Exception:
            return None

    def breaker_states(self) -> dict[str, str]:
        from orchestrator import subsystems

        try:
            breakers = subsystems.current().breakers
            return {name: breakers.get(name).status().state
                    for name in ("lookup_order", "llm-primary")}
        except Exception:
            return {}

    def sample(self) -> None:
        """Note the owners of the step claims held right now (their host part)."""
        from orchestrator import runtime
        from orchestrator.execution.claims import RedisStepClaims

        done: set[str] = getattr(self, "_done", set())
        try:
            pending = [inv for inv, _a, _t in list(self.accepted.values())
                       if inv not in done][-300:]
            pipe = runtime.current().redis.pipeline(transaction=False)
            for inv in pending:
                pipe.hgetall(RedisStepClaims.key(inv))
            for inv, fields in zip(pending, pipe.execute(), strict=True):
                self.claims.add(inv, fields)
        except Exception as exc:  # Redis restarting: look again next second
            log.debug("claim sample failed: %s", exc)

    def hosts_evidence(self) -> dict[str, Any]:
        return {**super().hosts_evidence(), "claim_owner_hosts": self.claims.by_host()}

    def kill_worker(self, on: bool) -> None:
        # With --hosts, the llm worker of the first host.
        worker = next(w for w in self.fleet.workers if w.name == "llm")
        if on:
            worker.kill()
        else:
            worker.start()

    def kill_reconciler(self, on: bool) -> None:
        reconciler = self.fleet.reconciler
        assert reconciler is not None
        if on:
            reconciler.kill()
        else:
            reconciler.start()

    def outcomes(self) -> list[Outcome]:
        import orchestrator
        from orchestrator.invocation import InvocationStatus

        found = list(self.rejected)
        for index, (inv_id, arrival, submitted) in self.accepted.items():
            inv = orchestrator.get(inv_id)
            tool = sum(s.duration or 0.0 for s in inv.steps if s.kind == "tool")
            if not inv.finished or inv.finished_at is None:
                found.append(Outcome(index, arrival.customer_id, Fate.LOST, submitted,
                                     cause=f"{inv.status.value} at the deadline",
                                     tool_seconds=tool))
                continue
            fate = {InvocationStatus.SUCCEEDED: Fate.SUCCEEDED,
                    InvocationStatus.CANCELLED: Fate.CANCELLED}.get(inv.status, Fate.FAILED)
            if fate is Fate.SUCCEEDED and any(s.fallback for s in inv.steps):
                fate = Fate.DEGRADED
            found.append(Outcome(index, arrival.customer_id, fate, submitted,
                                 finished=self.lab_time(inv.finished_at.timestamp()),
                                 latency=inv.latency, cause=_cause(inv.error),
                                 tool_seconds=tool))
        return found

    def tickets_handled(self, customer_id: str) -> int:
        from orchestrator import state
        from orchestrator.agents.support_triage import customer_key

        record = state.get(customer_key(f"{self.run}-{customer_id}"))
        return int(record.value.get("tickets_handled", 0)) if record else 0


def _cause(error: str | None) -> str | None:
    if not error:
        return None
    low = error.lower()
    for needle, cause in (("429", "LLM 429"), ("rate limit", "LLM 429"),
                          ("worker died", "worker died"), ("lookup", "tool"),
                          ("outage", "LLM outage"), ("stall", "stalled")):
        if needle in low:
            return cause
    return error.split(":")[0][:60]


class PilotProfile(Profile):
    """Plain Celery (:mod:`orchestrator.lab.pilot`): two worker processes of threads, LLM
    demand twice the provider's concurrency, records in Redis hashes."""

    name = "pilot"

    @contextmanager
    def start(self) -> Iterator[PilotProfile]:
        from orchestrator.devstack.processes import WorkerProcess
        from orchestrator.lab import pilot

        pilot.app.conf.broker_url = self.lab.redis_url
        self.prefix = f"lab:{self.run}"
        threads = max(1, self.scn.pilot_threads // 2)
        with ExitStack() as stack:
            self.workers = []
            for n in range(2):
                name = f"pilot{n}-{self.run}"
                worker = WorkerProcess(
                    {}, pilot.QUEUE, log_dir=self.lab.log_dir, name=name,
                    host=self.lab.hosts.place(n),
                    command=[sys.executable, "-m", "celery", "-A", "orchestrator.lab.pilot",
                             "-b", self.lab.redis_url, "worker", "-Q", pilot.QUEUE,
                             "--pool", "threads", "--concurrency", str(threads),
                             "--hostname", f"{name}@%h", "--without-gossip",
                             "--without-mingle", "--loglevel", "INFO"])
                stack.callback(worker.stop)
                worker.start()
                self.workers.append(worker)
            self.wall0 = time.time()
            yield self

    def _redis(self) -> Any:
        import redis

        if not hasattr(self, "_client"):
            self._client = redis.Redis.from_url(self.lab.redis_url, socket_timeout=5)
        return self._client

    def submit(self, arrival: Arrival) -> None:
        from orchestrator.lab import pilot

        now = self.lab_time(time.time())
        job_id = f"{self.run}-{arrival.index}"
        job = {"id": job_id, "prefix": self.prefix, "redis_url": self.lab.redis_url,
               "llm_url": self.lab.llm_url,
               "key": self.lab.keys[arrival.index % len(self.lab.keys)],
               "model": self.lab.model, "tools_url": self.lab.tools_url,
               "customer_id": arrival.customer_id, "ticket_id": arrival.ticket_id,
               "message": arrival.message}
        try:
            pilot.app.send_task(pilot.TASK, args=[job], queue=pilot.QUEUE)
        except Exception as exc:  # broker away: the pilot's producer just errors
            self.rejected.append(Outcome(arrival.index, arrival.customer_id, Fate.SUBMIT_ERROR,
                                         now, cause=type(exc).__name__))
            return
        self.accepted[arrival.index] = (job_id, arrival, now)

    def _results(self) -> dict[str, dict[str, Any]]:
        from orchestrator.lab import pilot

        raw = self._redis().hgetall(pilot.results_key(self.prefix))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def unfinished(self) -> int:
        from orchestrator.lab import pilot

        try:
            done = int(self._redis().hlen(pilot.results_key(self.prefix)))
        except Exception:
            done = getattr(self, "_last_done", 0)
        self._last_done = done
        return len(self.accepted) - done

    def queue_depth(self) -> int | None:
        from orchestrator.lab import pilot

        try:
            return int(self._redis().llen(pilot.QUEUE))
        except Exception:
            return None

    def kill_worker(self, on: bool) -> None:
        if on:
            self.workers[0].kill()
        else:
            self.workers[0].start()

    def kill_reconciler(self, on: bool) -> None:
        """A pilot has no reconciler: nothing to kill."""

    def outcomes(self) -> list[Outcome]:
        results = self._results()
        found = list(self.rejected)
        for index, (job_id, arrival, submitted) in self.accepted.items():
            got = results.get(job_id)
            if got is None:
                found.append(Outcome(index, arrival.customer_id, Fate.LOST, submitted,
                                     cause="no result at the deadline"))
                continue
            finished = self.lab_time(float(got["finished"]))
            found.append(Outcome(
                index, arrival.customer_id,
                Fate.SUCCEEDED if got["status"] == "succeeded" else Fate.FAILED, submitted,
                finished=finished, latency=round(finished - submitted, 4), cause=got["cause"],
                tool_seconds=float(got["tool_seconds"])))
        return found

    def tickets_handled(self, customer_id: str) -> int:
        from orchestrator.lab import pilot

        value = self._redis().hget(pilot.customer_key(self.prefix, customer_id), "tickets_handled")
        return int(value or 0)


PROFILES: dict[str, type[Profile]] = {"pilot": PilotProfile, "production": ProductionProfile}
