"""``--hosts N``: where the lab's worker groups run, and what shows they ran as hosts.

With N >= 2 and network namespaces at hand (root, ``ip``, ``unshare``), each host is a
network namespace and hostname of its own (:mod:`orchestrator.devstack.netns`): the
production profile runs a full set of workers (``agents``, ``llm``, ``tools``) on every
host, the pilot's two workers go round-robin; the flusher, reconciler, producer and
sampler stay on this host. Redis, PostgreSQL and the simulators listen on the bridge too,
and every URL a worker gets names the bridge address, so a host reaches them only over
its veth link. Otherwise the worker groups run as processes here, and one line says why.

What the run records as evidence: for each host, whether it reaches Redis over the
bridge and not over its own loopback; the host part of the step-claim owners seen in
Redis while invocations ran (:mod:`orchestrator.execution.identity`); the tasks each
Celery node (``llm@host-1`` ...) ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator.devstack import netns
from orchestrator.devstack.netns import Host, NetworkPlan

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LabHosts:
    """Where the worker groups run: ``plan`` is ``None`` when they run as processes here;
    ``note`` is the line that says so (empty for a plain one-host run)."""

    plan: NetworkPlan | None
    note: str = ""

    @property
    def address(self) -> str:
        """The address every service of the lab is reached at."""
        return self.plan.gateway if self.plan else LOOPBACK

    @property
    def hosts(self) -> tuple[Host, ...]:
        return self.plan.hosts if self.plan else ()

    @property
    def listen(self) -> tuple[str, ...]:
        """Addresses the servers serve on besides loopback."""
        return (self.plan.gateway,) if self.plan else ()

    @property
    def trust(self) -> tuple[str, ...]:
        """Networks PostgreSQL lets in without a password."""
        return (self.plan.subnet,) if self.plan else ()

    def place(self, n: int) -> Host | None:
        """The host of the ``n``-th worker of a profile that spreads its workers
        round-robin (``None``: this host)."""
        return self.hosts[n % len(self.hosts)] if self.hosts else None

    def describe(self) -> dict[str, Any]:
        if self.plan is None:
            return {"hosts": [], "note": self.note}
        return {"hosts": [{"hostname": h.hostname, "namespace": h.namespace,
                           "address": h.address} for h in self.plan.hosts],
                "subnet": self.plan.subnet, "services_at": self.plan.gateway,
                "note": self.note}


def as_processes(count: int, why: str) -> str:
    return (f"--hosts {count}: every worker group runs as processes on this host ({why}); "
            f"the fleet-wide limiter, breakers and leases are shared through Redis either way")


@contextmanager
def lab_hosts(count: int) -> Iterator[LabHosts]:
    """``count`` simulated hosts (see the module docstring) for the block, removed after
    it, or processes on this host when ``count`` < 2 or namespaces are not at hand."""
    if count < 2:
        yield LabHosts(None)
        return
    why = netns.unavailable()
    if why:
        yield LabHosts(None, as_processes(count, why))
        return
    with netns.host_network(count) as plan:
        names = ", ".join(f"{h.hostname} ({h.address})" for h in plan.hosts)
        yield LabHosts(plan, f"--hosts {count}: {names}, each in its own network and UTS "
                             f"namespace; Redis, PostgreSQL and the simulators reached over "
                             f"a bridge at {plan.gateway}")


def reachability(hosts: LabHosts, port: int) -> dict[str, dict[str, bool]]:
    """For each host: does it reach ``port`` (the lab's Redis) over the bridge, and over
    its own loopback (it must not: that loopback is the host's alone)."""
    return {h.hostname: {"via_bridge": netns.reaches(h, hosts.address, port),
                         "via_loopback": netns.reaches(h, LOOPBACK, port)}
            for h in hosts.hosts}


def owner_host(owner: str) -> str:
    """The host part of a claim owner name (``host/boot/pidns/pid/nonce/thread``)."""
    return owner.split("/", 1)[0]


class ClaimOwners:
    """Step claims seen in the in-flight hashes, counted once per (invocation, step,
    owner host)."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()

    def add(self, invocation_id: str, fields: dict[bytes, bytes]) -> None:
        for name, value in fields.items():
            if name.startswith(b"claim:"):
                holder = value.decode().split("|", 1)[0]
                self._seen.add((invocation_id, name.decode(), owner_host(holder)))

    def by_host(self) -> dict[str, int]:
        return dict(sorted(Counter(host for _i, _s, host in self._seen).items()))


def node_tasks(stats: dict[str, Any] | None) -> dict[str, int]:
    """Tasks run per Celery node, from ``inspect().stats()``'s answer."""
    return {node: sum(int(n) for n in (info.get("total") or {}).values())
            for node, info in sorted((stats or {}).items())}


def celery_nodes(broker_url: str, timeout: float = 3.0) -> dict[str, int]:
    """Tasks run per Celery node answering on ``broker_url`` right now."""
    from celery import Celery

    app = Celery("lab-inspect", broker=broker_url, set_as_current=False)
    try:
        return node_tasks(app.control.inspect(timeout=timeout).stats())
    except Exception:  # the broker restarting: no answer this time
        return {}
    finally:
        app.close()


def distinct_hosts(nodes: Iterable[str]) -> list[str]:
    """The hostnames of Celery node names (``name@host``)."""
    return sorted({node.rpartition("@")[2] for node in nodes})
