"""What a worker checks before it takes any message.

- The workflow modules (``ORCH_WORKFLOW_MODULES``) import: a worker that would fail every
  delivery must not start "ready". The message names the module; exit code 2.
- The broker's Redis keeps what it is given: any ``maxmemory-policy`` but ``noeviction``
  may evict queued messages and in-flight step records. A warning names the policy
  (managed Redis services that refuse ``CONFIG`` are skipped with a note).
"""

from __future__ import annotations

import logging

import redis

from orchestrator import subsystems
from orchestrator.errors import ConfigError

log = logging.getLogger("orchestrator.worker")

EXIT_BAD_CONFIG = 2


def load_workflows_or_exit() -> None:
    """Import the workflow modules; on failure log one line and exit with code 2."""
    try:
        subsystems.current().load_workflows()
    except ConfigError as exc:
        log.critical("worker not started: %s", exc)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def eviction_policy(client: redis.Redis) -> str | None:
    """The server's ``maxmemory-policy``, or None when it cannot be read."""
    try:
        found = client.config_get("maxmemory-policy")
    except redis.exceptions.ResponseError:
        return None
    value = found.get("maxmemory-policy")
    return value.decode() if isinstance(value, bytes) else value


def warn_on_eviction() -> None:
    """Warn when the broker's Redis may evict keys (see the module docstring)."""
    client = subsystems.current().runtime.redis
    try:
        policy = eviction_policy(client)
    except redis.exceptions.RedisError as exc:
        log.warning("could not read the broker's maxmemory-policy (%s)", type(exc).__name__)
        return
    if policy is None:
        log.warning("could not read the broker's maxmemory-policy (CONFIG refused): make "
                    "sure it is noeviction, or queued messages may be evicted")
    elif policy != "noeviction":
        log.warning("the broker's Redis has maxmemory-policy %s: under memory pressure it "
                    "may evict queued messages and in-flight step records; set it to "
                    "noeviction", policy)
