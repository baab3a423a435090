"""One lab run: the lab's own Redis and PostgreSQL, then for each profile fresh
simulators, its fleet, the arrival schedule submitted on time, faults applied, a sample
each second, a drain until nothing is unfinished or the deadline, and the outcomes."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orchestrator.devstack.netns import at
from orchestrator.lab.faults import Fault, FaultInjector, fault_plan
from orchestrator.lab.hosts import lab_hosts, reachability
from orchestrator.lab.outcome import Outcome
from orchestrator.lab.profiles import PROFILES, LabServices, Profile
from orchestrator.lab.scenario import Scenario
from orchestrator.lab.schedule import Arrival, arrivals

log = logging.getLogger(__name__)
MODEL = "sim-gpt"
Progress = Callable[[str, float, float, int, int], None]
"""(profile, lab seconds elapsed, lab seconds planned, submitted, unfinished)."""


def drain_seconds(scn: Scenario) -> float:
    """How long after the last arrival a profile may finish what it accepted."""
    return max(60.0, scn.seconds / 2)


@dataclass
class ProfileResult:
    name: str
    run: str
    outcomes: list[Outcome]
    samples: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    fault_errors: list[str]
    provider: dict[str, Any]
    tools: dict[str, Any]
    tickets: dict[str, tuple[int, int]]
    """customer -> (tickets_handled in the record, invocations that succeeded)."""
    deadline: float
    drained: bool
    provider_peak: tuple[int, int] = (0, 0)
    """(most requests one key had in flight at the provider, the per-key limit)."""
    hosts: dict[str, Any] = field(default_factory=dict)
    """Evidence of where the work ran (:mod:`orchestrator.lab.hosts`)."""


@dataclass
class LabResult:
    scenario: Scenario
    seed: int
    plan: list[Fault]
    profiles: list[ProfileResult] = field(default_factory=list)
    hosts: dict[str, Any] = field(default_factory=dict)
    """The simulated hosts and what each reached (:mod:`orchestrator.lab.hosts`)."""


class Sampler(threading.Thread):
    """Once a second: queue depth, the provider's 429s so far, breaker states."""

    def __init__(self, profile: Profile, llm_base: str, started: float) -> None:
        super().__init__(name="lab-sampler", daemon=True)
        self.profile, self.llm_base, self.started = profile, llm_base, started
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._halt.wait(1.0):
                try:
                    totals = http.get(f"{self.llm_base}/stats").json()["totals"]
                except (httpx.HTTPError, ValueError, KeyError):
                    totals = {}
                self.profile.sample()
                self.samples.append({
                    "t": round(time.monotonic() - self.started, 2),
                    "depth": self.profile.queue_depth(),
                    "provider_429s": totals.get("rate_limited_429"),
                    "breakers": self.profile.breaker_states(),
                })

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


@contextmanager
def simulators(scn: Scenario, host: str = "127.0.0.1",
               ) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """A fresh LLM provider (the scenario's keys and limits) and tool server (2 % errors,
    hangs past the timeout) on ``host``; yields ``(llm .../v1 url, tools url, keys)``."""
    from orchestrator.devstack.simulators.llm_provider import LLMSimConfig
    from orchestrator.devstack.simulators.llm_provider import create_app as llm_app
    from orchestrator.devstack.simulators.server import start_server
    from orchestrator.devstack.simulators.tool_server import ToolSimConfig
    from orchestrator.devstack.simulators.tool_server import create_app as tools_app

    keys = tuple(f"lab-key-{i}" for i in range(scn.llm_keys))
    with ExitStack() as stack:
        llm = start_server(llm_app(LLMSimConfig(
            keys=keys, rpm=scn.llm_rpm, tpm=10_000_000, concurrency=scn.llm_concurrency,
            model=MODEL, hang_seconds=30.0)), host)
        stack.callback(llm.stop)
        tools = start_server(tools_app(ToolSimConfig(
            error_rate=scn.tool_error_rate, hang_rate=scn.tool_hang_rate,
            hang_seconds=scn.tool_hang_seconds)), host)
        stack.callback(tools.stop)
        yield f"{llm.url}/v1", tools.url, keys


def _drive(profile: Profile, scn: Scenario, schedule: list[Arrival], plan: list[Fault],
           progress: Progress) -> ProfileResult:
    llm_base = profile.lab.llm_url.removesuffix("/v1")
    started = time.monotonic()
    profile.wall0 = time.time()
    injector = FaultInjector(plan, profile, started)
    sampler = Sampler(profile, llm_base, started)
    injector.start()
    sampler.start()
    total = scn.seconds + drain_seconds(scn)
    submitted = 0
    for arrival in schedule:
        wait = started + arrival.at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        profile.submit(arrival)
        submitted += 1
        if submitted % 10 == 0:
            progress(profile.name, time.monotonic() - started, total, submitted, -1)
    while time.monotonic() < started + scn.seconds:
        time.sleep(0.5)
    deadline = started + total
    drained = False
    while time.monotonic() < deadline:
        left = profile.unfinished()
        progress(profile.name, time.monotonic() - started, total, submitted, left)
        if left == 0 and not injector.is_alive():
            drained = True
            break
        time.sleep(1.0)
    injector.stop()
    injector.join(60)
    sampler.stop()
    evidence = profile.hosts_evidence()
    lab_deadline = round(time.monotonic() - started, 1)
    outcomes = profile.outcomes()
    served: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.served:
            served[outcome.customer_id] = served.get(outcome.customer_id, 0) + 1
    customers = sorted({a.customer_id for a in schedule})
    tickets = {c: (profile.tickets_handled(c), served.get(c, 0)) for c in customers}
    with httpx.Client(timeout=5) as http:
        provider = http.get(f"{llm_base}/stats").json()
        tools = http.get(f"{profile.lab.tools_url}/stats").json()
    peak = max([int(k.get("max_in_flight", 0)) for k in provider["keys"].values()] or [0])
    return ProfileResult(profile.name, profile.run, outcomes, sampler.samples,
                         injector.log.applied, injector.log.errors, provider["totals"],
                         tools["totals"], tickets, lab_deadline, drained,
                         (peak, int(provider["limits"]["concurrency"])), evidence)


def run_lab(scn: Scenario, profiles: list[str], *, seed: int, out: Path, faults: bool = True,
            skip: frozenset[str] = frozenset(), hosts: int = 1,
            progress: Progress = lambda *_a: None,
            say: Callable[[str], None] = lambda _m: None) -> LabResult:
    """Run each of ``profiles`` in turn on the same schedule and fault plan (without the
    fault kinds in ``skip``), its worker groups on ``hosts`` simulated hosts when there
    are 2 or more (:mod:`orchestrator.lab.hosts`). The hosts are removed on exit, however
    the run ends."""
    from orchestrator.devstack.servers import EmbeddedPostgres, EmbeddedRedis

    schedule = arrivals(scn, seed)
    plan = [f for f in fault_plan(scn) if f.kind not in skip] if faults else []
    result = LabResult(scn, seed, plan)
    log_dir = (out / "logs").resolve()
    with lab_hosts(hosts) as placed, tempfile.TemporaryDirectory(prefix="orch-lab-") as tmp:
        if placed.note:
            say(placed.note)
        redis = EmbeddedRedis(Path(tmp) / "redis", appendonly=True, listen=placed.listen)
        postgres = EmbeddedPostgres(Path(tmp) / "postgres", listen=placed.listen,
                                    trust=placed.trust)
        with redis, postgres:
            say(f"lab Redis (appendonly) at {at(redis.url, placed.address)}, PostgreSQL at "
                f"{at(postgres.url, placed.address)}")
            result.hosts = {**placed.describe(),
                            "redis_reached": reachability(placed, redis.port)}
            for name in profiles:
                with simulators(scn, placed.address) as (llm_url, tools_url, keys):
                    lab = LabServices(redis, postgres, llm_url, tools_url, keys, MODEL, log_dir,
                                      placed)
                    run = f"{name[:4]}-{seed}-{int(time.time()) % 1_000_000}"
                    profile = PROFILES[name](lab, scn, run)
                    say(f"{name}: starting its fleet (logs under {out})")
                    with profile.start():
                        say(f"{name}: {len(schedule)} arrivals over {scn.seconds:.0f}s, "
                            f"{len(plan)} faults")
                        result.profiles.append(_drive(profile, scn, schedule, plan, progress))
    return result
