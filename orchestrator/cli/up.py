"""``orchestrator up``: the whole fleet in the foreground until Ctrl-C.

Another shell reaches the fleet by sourcing the environment file ``up`` writes (every
``ORCH_*`` variable of the fleet, keys and passwords included, mode 0600, removed when
the fleet stops); the terminal shows only its path and the fleet's addresses with their
passwords masked.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from config.masking import mask_text
from orchestrator import runtime
from orchestrator.cli.output import done, out
from orchestrator.devstack.fleet import local_fleet

ENV_FILE = "fleet.env"  # under ORCH_DATA_DIR


def write_env_file(path: Path, env: Mapping[str, str]) -> Path:
    """Write ``export NAME='value'`` lines for ``env`` to ``path``, readable by its owner
    alone (0600, also when the file was there before); returns the absolute path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)  # O_CREAT's mode applies to new files only
        file.write("# orchestrator up: source this file to reach the fleet "
                   "(it holds keys and passwords)\n")
        for name, value in env.items():
            file.write(f"export {name}={shlex.quote(value)}\n")
    return path.resolve()


def addresses(env: Mapping[str, str]) -> list[str]:
    """``NAME=url`` of each address in ``env`` (``*_URL``, ``*_URLS``), passwords masked."""
    return [f"{name}={mask_text(value)}" for name, value in env.items()
            if name.endswith(("_URL", "_URLS"))]


def run_up() -> None:
    """Start everything, report where it is, and stop it all cleanly on Ctrl-C/SIGTERM."""
    settings = runtime.current().settings
    stopping = False

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    with local_fleet(settings, say=done) as fleet:
        signal.signal(signal.SIGTERM, _stop)
        env = fleet.settings.environment()
        env_file = write_env_file(fleet.settings.data_dir / ENV_FILE, env)
        try:
            out.print("[bold]fleet up[/]: submit with "
                      "`orchestrator submit support-triage '{...}'`; Ctrl-C stops it all")
            out.print(f"  another shell reaches it with: source {env_file}  (mode 0600: it "
                      "holds the keys and passwords)", highlight=False)
            for line in addresses(env):
                out.print(f"  {line}", highlight=False)
            while not stopping:
                dead = [w.name for w in fleet.workers if not w.alive]
                if dead:
                    out.print(f"[red]worker(s) exited: {', '.join(dead)}[/]; stopping")
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            with contextlib.suppress(OSError):
                env_file.unlink()
        out.print("stopping workers, simulators and services ...")
    out.print("[green]stopped[/]")
