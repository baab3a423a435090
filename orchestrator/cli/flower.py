"""``orchestrator flower``: Flower on the fleet's broker, behind basic auth, in this process.

The login goes to Flower as one credential, never through ``FLOWER_BASIC_AUTH`` or argv:
Flower splits that variable (and ``--basic_auth``) on commas (``flower/command.py``
``apply_env_options``, a ``multiple`` tornado option), so ``admin:a,b`` would become two
credentials, ``admin:a`` and ``b``, the second without a user name. Here the option is
set as a one-item list before Flower starts, so a password may hold any character.
An empty password, or a user name that basic auth cannot carry, is refused (exit 2).

The task list shows each step's label (``args`` is the message's ``argsrepr``: step,
workflow, invocation id; see ``orchestrator/execution/dispatch.py``), never a payload.
"""

from __future__ import annotations

import os

from config import Settings
from orchestrator import runtime
from orchestrator.errors import ConfigError

# Flower's task list columns; ``args`` is the step label. FLOWER_TASKS_COLUMNS overrides.
TASKS_COLUMNS = "name,args,state,received,started,runtime,worker,retries,uuid"


def basic_auth(settings: Settings) -> str:
    """``user:password`` for Flower, from ``ORCH_FLOWER_USER``/``ORCH_FLOWER_PASSWORD``.

    Raises ``ConfigError`` naming the variable when either is missing or empty, or when
    the user name holds ``:`` (basic auth ends the user name at the first one).
    """
    user = settings.flower_user
    password = settings.flower_password
    if not user or password is None:
        raise ConfigError(
            "ORCH_FLOWER_USER and ORCH_FLOWER_PASSWORD must be set: Flower shows the fleet's "
            "tasks and can revoke them, so it never runs without a login"
        )
    if not user.strip():
        raise ConfigError("ORCH_FLOWER_USER is blank: give the login a user name")
    if ":" in user:
        raise ConfigError("ORCH_FLOWER_USER holds ':', which HTTP basic auth cannot carry in "
                          "a user name: choose one without it")
    secret = password.get_secret_value()
    if not secret.strip():
        raise ConfigError("ORCH_FLOWER_PASSWORD is empty: Flower would let anyone in with "
                          "the user name alone; set a password")
    return f"{user}:{secret}"


def run_flower(*, port: int, address: str) -> None:
    """Run Flower (``celery -A workers.app flower``) in this process until stopped.

    Raises ``ConfigError`` without a broker or a usable login (see :func:`basic_auth`).
    """
    rt = runtime.current()
    rt.redis_url  # noqa: B018 - a missing broker URL fails here, clearly
    login = basic_auth(rt.settings)

    import flower.options  # noqa: F401 - defines Flower's options on tornado's registry
    from celery.bin.celery import celery
    from tornado.options import options

    # Flower would read a FLOWER_BASIC_AUTH of the shell after this and split it on
    # commas: the login comes from ORCH_FLOWER_USER/PASSWORD alone.
    os.environ.pop("FLOWER_BASIC_AUTH", None)
    options.basic_auth = [login]
    options.tasks_columns = TASKS_COLUMNS
    celery.main(args=["-A", "workers.app", "flower", f"--port={port}",
                      f"--address={address}"], prog_name="celery")
