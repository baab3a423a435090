"""Who holds a step claim, and whether that holder is known to be gone."""

from __future__ import annotations

import os
import socket
import threading


class ProcessIdentity:
    """Claim owners named by host, process and thread."""

    def owner(self) -> str:
        """This thread's owner name: host, process and thread (unique across the fleet)."""
        return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def is_dead(self, owner: str) -> bool:
        """True when ``owner`` was a process on this host that no longer exists."""
        host, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if host != socket.gethostname() or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
