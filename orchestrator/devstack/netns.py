"""Several hosts on one machine: a network namespace per host, joined to the machine by
a veth pair on a bridge of its own, and a UTS namespace per process (its own hostname).

The plan (names, addresses, ``ip`` commands, the wrapped command line of a process on a
host) is pure and unit-tested; :func:`host_network` runs it, and undoes it on exit,
however the block exits. Names carry the pid of the run that made them
(``orch-lab-<pid>-<i>``, bridge ``olb<pid>``, links ``olv<pid>-<i>``), so what a crashed
run left behind is found and removed at the next start while a live run's is left alone.

Traffic stays on the bridge's private /24 (``10.213.<n>.0/24``): the root namespace holds
``.1`` (where the services listen); host ``i`` is ``.<10 + i>`` with a default route via
``.1``. A host's own loopback is its own: nothing of the machine answers there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from orchestrator.errors import ServiceError

log = logging.getLogger(__name__)
SUBNET = "10.213.{octet}.0/24"
NAMESPACE = "orch-lab-{owner}-{index}"
BRIDGE = "olb{owner}"
LINK = "olv{owner}-{index}"
_NAMESPACE_RE = re.compile(r"^orch-lab-(\d+)-(\d+)$")
_LINK_RE = re.compile(r"^ol[bv](\d+)(?:-\d+)?$")
HOST_OFFSET = 10
"""Host ``i`` (from 1) gets ``.<HOST_OFFSET + i>`` of the subnet."""


@dataclass(frozen=True)
class Host:
    """One simulated host: its network namespace, hostname, address and veth link."""

    index: int
    namespace: str
    hostname: str
    address: str
    link: str

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this host: in its network namespace, in a UTS namespace of its
        own named :attr:`hostname`. Every step execs the next, so the process keeps the
        pid (and process group) it was started with, and signals reach it."""
        inner = f"hostname {shlex.quote(self.hostname)} && exec {shlex.join(argv)}"
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--",
                "sh", "-c", inner]


@dataclass(frozen=True)
class NetworkPlan:
    """The bridge, its address in the root namespace (``gateway``) and the hosts."""

    owner: int
    subnet: str
    bridge: str
    gateway: str
    hosts: tuple[Host, ...]

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def setup_commands(self) -> list[list[str]]:
        """The ``ip`` commands that build the plan, in order."""
        cmds = [["ip", "link", "add", self.bridge, "type", "bridge"],
                ["ip", "addr", "add", f"{self.gateway}/{self.prefix}", "dev", self.bridge],
                ["ip", "link", "set", self.bridge, "up"]]
        for host in self.hosts:
            ns = ["ip", "-n", host.namespace]
            cmds += [["ip", "netns", "add", host.namespace],
                     ["ip", "link", "add", host.link, "type", "veth", "peer", "name", "eth0",
                      "netns", host.namespace],
                     ["ip", "link", "set", host.link, "master", self.bridge, "up"],
                     [*ns, "link", "set", "lo", "up"],
                     [*ns, "addr", "add", f"{host.address}/{self.prefix}", "dev", "eth0"],
                     [*ns, "link", "set", "eth0", "up"],
                     [*ns, "route", "add", "default", "via", self.gateway]]
        return cmds

    def teardown_commands(self) -> list[list[str]]:
        """What removes the plan (each may fail harmlessly when already gone)."""
        return teardown_commands([h.namespace for h in self.hosts],
                                 [h.link for h in self.hosts] + [self.bridge])


def plan(count: int, *, owner: int, octet: int) -> NetworkPlan:
    """``count`` hosts (``host-1`` ...) for the run of pid ``owner`` on
    ``10.213.<octet>.0/24``. Raises ``ValueError`` for a count or octet out of range."""
    if not 1 <= count <= 200:
        raise ValueError(f"host count {count} out of range 1..200")
    if not 0 <= octet <= 255:
        raise ValueError(f"subnet octet {octet} out of range 0..255")
    net = ipaddress.ip_network(SUBNET.format(octet=octet))
    hosts = tuple(
        Host(i, NAMESPACE.format(owner=owner, index=i), f"host-{i}",
             str(net.network_address + HOST_OFFSET + i), LINK.format(owner=owner, index=i))
        for i in range(1, count + 1))
    return NetworkPlan(owner, str(net), BRIDGE.format(owner=owner),
                       str(net.network_address + 1), hosts)


def teardown_commands(namespaces: Sequence[str], links: Sequence[str]) -> list[list[str]]:
    """Delete ``links`` (a veth goes with its peer) and then ``namespaces``."""
    return ([["ip", "link", "del", link] for link in links]
            + [["ip", "netns", "del", ns] for ns in namespaces])


def free_octet(used: Sequence[str], preferred: int) -> int:
    """The first third octet from ``preferred`` (wrapping, 1..254) whose /24 under
    10.213 holds none of the ``used`` addresses (CIDR or plain)."""
    taken = set()
    for addr in used:
        ip = ipaddress.ip_interface(addr).ip
        if ip.version == 4 and ip in ipaddress.ip_network("10.213.0.0/16"):
            taken.add(int(ip) >> 8 & 0xFF)
    for step in range(254):
        octet = (preferred - 1 + step) % 254 + 1
        if octet not in taken:
            return octet
    raise ServiceError("no free /24 under 10.213.0.0/16 for the lab's hosts")


def stale(names: Sequence[str], alive: Callable[[int], bool]) -> tuple[list[str], list[str]]:
    """Of interface and namespace ``names``, those of runs whose pid is not ``alive``:
    ``(namespaces, links)``."""
    namespaces, links = [], []
    for name in names:
        found = _NAMESPACE_RE.match(name)
        if found and not alive(int(found.group(1))):
            namespaces.append(name)
            continue
        found = _LINK_RE.match(name)
        if found and not alive(int(found.group(1))):
            links.append(name)
    return namespaces, links


def at(url: str, address: str) -> str:
    """``url`` with its host replaced by ``address`` (user and port kept)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user + '@' if user else ''}{address}{port}"))


def unavailable() -> str | None:
    """Why hosts cannot be simulated here (``"not root"``, ``"no `ip`"``, ...), or ``None``."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"no `{tool}`"
    return None


# -- running the plan -----------------------------------------------------------------------
def _ip(argv: Sequence[str], *, check: bool = True) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise ServiceError(f"{shlex.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(namespace: str) -> None:
    # A namespace with a process left in it outlives `ip netns del`, and so does its link.
    for pid in _ip(["ip", "netns", "pids", namespace], check=False).split():
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _remove(namespaces: Sequence[str], links: Sequence[str]) -> None:
    for ns in namespaces:
        _kill_inside(ns)
    for cmd in teardown_commands(namespaces, links):
        _ip(cmd, check=False)


def existing() -> tuple[list[str], list[str]]:
    """The namespaces and the interface names of the root namespace, as ``ip`` lists them."""
    namespaces = [line.split()[0] for line in _ip(["ip", "netns", "list"]).splitlines()
                  if line.strip()]
    links = [line.split(":")[1].strip().split("@")[0]
             for line in _ip(["ip", "-o", "link", "show"]).splitlines() if ":" in line]
    return namespaces, links


def remove_stale() -> list[str]:
    """Remove the namespaces and links of earlier runs that are gone; returns their names."""
    namespaces, links = existing()
    gone_ns, gone_links = stale(namespaces + links, _alive)
    _remove(gone_ns, gone_links)
    return gone_ns + gone_links


@contextmanager
def host_network(count: int) -> Iterator[NetworkPlan]:
    """Build ``count`` hosts (see the module docstring) and remove them on exit.

    Leftovers of crashed runs are removed first. Raises :class:`ServiceError` when
    :func:`unavailable` says why not, or an ``ip`` command fails (what was built is
    removed again first).
    """
    why = unavailable()
    if why:
        raise ServiceError(f"cannot simulate hosts: {why}")
    for name in remove_stale():
        log.info("removed %s, left by an earlier run", name)
    addresses = [line.split()[3] for line in _ip(["ip", "-o", "-4", "addr"]).splitlines()
                 if len(line.split()) > 3]
    built = plan(count, owner=os.getpid(), octet=free_octet(addresses, os.getpid() % 254 + 1))
    try:
        for cmd in built.setup_commands():
            _ip(cmd)
        yield built
    finally:
        _remove([h.namespace for h in built.hosts], [h.link for h in built.hosts]
                + [built.bridge])


def reaches(host: Host, address: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a TCP connection from inside ``host``'s namespace to ``address:port`` opens."""
    probe = ("import socket,sys\n"
             f"try: socket.create_connection(({address!r}, {port}), {timeout}).close()\n"
             "except OSError: sys.exit(1)")
    done = subprocess.run(["ip", "netns", "exec", host.namespace, sys.executable, "-c", probe],
                          capture_output=True, timeout=timeout + 10)
    return done.returncode == 0
