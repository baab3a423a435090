"""Who holds a step claim, and whether that holder is known to be gone.

An owner name is ``host/boot/pidns/pid/nonce/thread``:
- ``boot`` (the kernel's boot id) and ``pidns`` (the inode of the process's PID
  namespace) say which kernel and which PID namespace the pid belongs to, so two
  containers on one host network (same host name, their own PID namespaces) never
  mistake each other's pids;
- ``nonce`` is drawn once per process (again after ``fork``), so a reused pid is never
  the same owner.

A claim normally ends by its lease expiring without renewal (see
:mod:`orchestrator.execution.heartbeat`); :meth:`ProcessIdentity.is_dead` only speeds that
up for a holder in the same kernel and PID namespace whose process is gone.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from functools import cache
from pathlib import Path


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8] or "-"
    except OSError:
        return "-"


def _pid_namespace() -> str:
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return "-"
    return link.partition("[")[2].rstrip("]") or "-"


class ProcessIdentity:
    """Claim owners of this process, unique across hosts, containers and pid reuse."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""

    def _process_prefix(self) -> str:
        pid = os.getpid()
        if pid != self._pid:  # first use, or a forked child: a new nonce
            self._prefix = "/".join((socket.gethostname().replace("/", "_"), _boot_id(),
                                     _pid_namespace(), str(pid), uuid.uuid4().hex[:12]))
            self._pid = pid
        return self._prefix

    def owner(self) -> str:
        """This thread's owner name (see the module docstring)."""
        return f"{self._process_prefix()}/{threading.get_ident()}"

    def is_dead(self, owner: str) -> bool:
        """True only when ``owner`` ran in this kernel and PID namespace and its process
        no longer exists. Anything else (another host, another container, an owner
        name of an older format) is left to its lease."""
        parts = owner.split("/")
        if len(parts) != 6:
            return False
        host, boot, pidns, pid_text, nonce, _thread = parts
        mine = self._process_prefix().split("/")
        if (host, boot, pidns) != tuple(mine[:3]) or "-" in (boot, pidns):
            return False
        if not pid_text.isdigit():
            return False
        if int(pid_text) == os.getpid():
            return nonce != mine[4]  # this pid, an earlier process's nonce: that one is gone
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
