"""``orchestrator flower``: become Flower on the fleet's broker, by exec, behind basic auth."""

from __future__ import annotations

import os
import sys

from orchestrator import runtime
from orchestrator.errors import ConfigError


def run_flower(*, port: int, address: str) -> None:
    """Replace this process with Flower, its basic auth passed by environment, not argv
    (where ``ps`` would show it).

    Raises ``ConfigError`` without ``ORCH_FLOWER_USER``/``ORCH_FLOWER_PASSWORD`` or a broker.
    """
    settings = runtime.current().settings
    runtime.current().redis_url  # noqa: B018 - a missing broker URL fails here, clearly
    if not settings.flower_user or settings.flower_password is None:
        raise ConfigError(
            "ORCH_FLOWER_USER and ORCH_FLOWER_PASSWORD must be set: Flower shows task "
            "payloads and can revoke tasks, so it never runs without a login"
        )
    password = settings.flower_password.get_secret_value()
    env = {**os.environ, "FLOWER_BASIC_AUTH": f"{settings.flower_user}:{password}"}
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
            f"--port={port}", f"--address={address}"]
    os.execve(sys.executable, argv, env)
