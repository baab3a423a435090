"""One retry after a lost connection: a restarted PostgreSQL costs a reconnect, not an
error, without a ping before every statement."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError

P = ParamSpec("P")
T = TypeVar("T")


def reconnecting(fn: Callable[P, T]) -> Callable[P, T]:
    """Run ``fn`` again once if its connection turned out dead. SQLAlchemy has then
    discarded the pool, so the retry opens a fresh connection. Only for statements that
    are safe to repeat (reads, and writes guarded by a constraint or a version)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return fn(*args, **kwargs)

    return wrapper
