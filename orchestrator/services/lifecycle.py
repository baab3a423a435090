"""What both embedded servers share: restart, use as a context manager, a readable repr."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self


class ManagedServer:
    """A server process of ours with ``start(timeout)`` and ``stop()``."""

    data_dir: Path
    port: int
    default_start_timeout: float = 30.0

    @property
    def pid(self) -> int | None:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self, timeout: float | None = None) -> Self:
        """Stop, then start again on the same port and data directory."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.data_dir}, port={self.port}, pid={self.pid})"
