"""The one loader of the subsystems' Lua scripts.

Each subsystem keeps its scripts in its own ``lua/`` folder. A script's source is read
the first time a client registers it (never at import) and kept for the process;
redis-py then runs it by SHA and sends the source again only when the server lacks it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script


@cache
def source(package: str, name: str) -> str:
    """The text of ``<package>/lua/<name>.lua``."""
    return (resources.files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def script(client: redis.Redis, package: str, name: str) -> Script:
    """``<package>/lua/<name>.lua`` registered on ``client`` (no round trip until run)."""
    return client.register_script(source(package, name))
