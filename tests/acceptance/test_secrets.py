"""Secrets and payloads stay where they belong, as users and operators meet the system.

A stack with planted secrets: Redis of our own behind ``--requirepass``, a PostgreSQL role
with a password (created and dropped here), an LLM key and a fallback key the simulators
know, a Flower password holding a comma. A real worker runs workflows whose payloads hold
a card number, one step through a retry; the CLI submits, reports, fails on bad settings
and reshards; Flower and a Celery event receiver watch. Every output, log file, event and
Flower answer is then searched for the secrets and the card number: none may appear.

Also here: Redis or PostgreSQL out of reach is one line naming the variable (exit 1 for
an outage, 2 for a reason in the configuration), from the CLI and from ``submit``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery

import orchestrator
from config import Settings
from orchestrator import runtime
from orchestrator.devstack.processes import kill_group, stop_group
from orchestrator.devstack.servers.ports import free_port, wait_for_port
from orchestrator.store.migrate import upgrade
from tests.procs import Fleet, wait_for

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")

LLM_KEY = "sk-planted-SECRET-123"
FALLBACK_KEY = "sk-planted-FALLBACK-456"
DB_PASSWORD = "S3cr3t-planted"
REDIS_PASSWORD = "R3dis-planted-PW"
FLOWER_USER = "admin"
FLOWER_PASSWORD = "Fl0wer,planted-PW"  # Flower splits FLOWER_BASIC_AUTH on commas
CARD = "4111111111111111"
# Each must never show; the Flower password's halves are searched for apart.
PLANTED = (LLM_KEY, FALLBACK_KEY, DB_PASSWORD, REDIS_PASSWORD, "Fl0wer", "planted-PW",
           CARD)
ROLE = "orch_secret_test"


def _leaks(texts: dict[str, str]) -> list[str]:
    return [f"{secret!r} in {where}" for where, text in texts.items()
            for secret in PLANTED if secret in text]


def _psycopg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@dataclass
class Stack:
    """The planted-secrets services and what was captured from them."""

    env: dict[str, str]
    redis_port: int
    redis_url: str
    database_url: str
    log_dir: Path
    texts: dict[str, str] = field(default_factory=dict)  # where -> what was shown there

    def run(self, args: list[str], env: dict[str, str] | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``orchestrator ARGS`` as a user runs it; its output is kept for the search."""
        done = subprocess.run([ORCHESTRATOR, *args],
                              env=_clean_env({"PYTHONPATH": str(REPO), **(env or self.env)}),
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)
        self.texts[f"orchestrator {' '.join(args)[:60]} (stdout)"] = done.stdout
        self.texts[f"orchestrator {' '.join(args)[:60]} (stderr)"] = done.stderr
        return done


@pytest.fixture(scope="module")
def secret_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A redis-server of our own that wants a password (given in a config file, not argv)."""
    data = tmp_path_factory.mktemp("secret-redis")
    port = free_port()
    conf = data / "redis.conf"
    conf.write_text(f'port {port}\nbind 127.0.0.1\nrequirepass "{REDIS_PASSWORD}"\n'
                    f'save ""\nappendonly no\ndir {data}\n')
    conf.chmod(0o600)
    with (data / "redis.log").open("wb") as log:
        proc = subprocess.Popen(["redis-server", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for_port("127.0.0.1", port, 10), (data / "redis.log").read_text()
        yield port, f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    finally:
        kill_group(proc)


@pytest.fixture(scope="module")
def secret_database(service_urls: tuple[str, str]) -> Iterator[str]:
    """A database owned by a role with a password (both created here, dropped after)."""
    admin = _psycopg(service_urls[1])
    name = f"orch_secret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{ROLE}"')
        conn.execute(f"CREATE ROLE \"{ROLE}\" LOGIN PASSWORD '{DB_PASSWORD}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{ROLE}"')
    host = service_urls[1].split("@", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql+psycopg://{ROLE}:{DB_PASSWORD}@{host}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{ROLE}"')


@pytest.fixture(scope="module")
def stack(secret_redis: tuple[int, str], secret_database: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Simulators that know only the planted keys, and the environment of the stack."""
    from orchestrator.devstack.simulators.llm_provider import LLMSimConfig
    from orchestrator.devstack.simulators.llm_provider import create_app as llm_app
    from orchestrator.devstack.simulators.server import start_server
    from orchestrator.devstack.simulators.tool_server import ToolSimConfig
    from orchestrator.devstack.simulators.tool_server import create_app as tools_app

    llm = start_server(llm_app(LLMSimConfig(keys=(LLM_KEY,), latency=0.01, jitter=0.0)))
    fallback = start_server(llm_app(LLMSimConfig(keys=(FALLBACK_KEY,), latency=0.01,
                                                 jitter=0.0)))
    tools = start_server(tools_app(ToolSimConfig(latency=0.01, jitter=0.0)))
    log_dir = tmp_path_factory.mktemp("secret-stack")
    port, redis_url = secret_redis
    env = {
        "PYTHONPATH": str(REPO),
        "ORCH_REDIS_URL": redis_url,
        "ORCH_DATABASE_URL": secret_database,
        "ORCH_LLM_BASE_URL": f"{llm.url}/v1",
        "ORCH_LLM_API_KEYS": LLM_KEY,
        "ORCH_LLM_FALLBACK_BASE_URL": f"{fallback.url}/v1",
        "ORCH_LLM_FALLBACK_API_KEYS": FALLBACK_KEY,
        "ORCH_TOOLS_URL": tools.url,
        "ORCH_FLOWER_USER": FLOWER_USER,
        "ORCH_FLOWER_PASSWORD": FLOWER_PASSWORD,
        "ORCH_WORKFLOW_MODULES": "orchestrator.agents,tests.workflows,tests.workloads",
        "ORCH_DATA_DIR": str(log_dir / "data"),
        "ORCH_VISIBILITY_TIMEOUT": "20",
        "ORCH_STEP_LEASE_SECONDS": "8",
    }
    try:
        yield Stack(env=env, redis_port=port, redis_url=redis_url,
                    database_url=secret_database, log_dir=log_dir)
    finally:
        for server in (llm, fallback, tools):
            server.stop()


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    """The process environment without the shell's ORCH_* variables, plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}, **env}


class EventLog:
    """Every Celery event on the broker while running, as the JSON Celery sent."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery("secret-events", broker=broker_url, set_as_current=False)
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="events")

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self.ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventLog:
        self._thread.start()
        assert self.ready.wait(10)
        time.sleep(1.0)  # the consumer is bound to the events exchange
        return self

    def __exit__(self, *_: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(5)

    def dump(self) -> str:
        return "\n".join(json.dumps(event, default=str) for event in self.events)


class FlowerProcess:
    """``orchestrator flower`` on a free port, its output in a log file."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "flower.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [ORCHESTRATOR, "flower", "--port", str(self.port)], env=_clean_env(env),
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)

    def get(self, path: str, login: str | None) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if login is not None:
            token = base64.b64encode(login.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def wait_ready(self) -> None:
        assert wait_for(lambda: self.proc.poll() is not None
                        or wait_for_port("127.0.0.1", self.port, 0.2), 30)
        assert self.proc.poll() is None, self.log_path.read_text()

    def stop(self) -> None:
        stop_group(self.proc, signal.SIGTERM, 10, whole_group=True)


LOGIN = f"{FLOWER_USER}:{FLOWER_PASSWORD}"


def test_planted_secrets_and_a_card_number_never_show(stack: Stack) -> None:
    fleet = Fleet(_clean_env(stack.env), stack.log_dir)
    flower = FlowerProcess(stack.env, stack.log_dir)
    try:
        with EventLog(stack.redis_url) as events:
            fleet.start("agents,llm,tools", pool="threads", concurrency=8)
            flower.wait_ready()
            time.sleep(2)  # Flower turns events on and starts listening
            # A payload holding a card number, its first step refused once: a retry.
            probe = stack.run(["submit", "test-probe", json.dumps(
                {"tag": f"card {CARD}", "first": "backpressure", "times": 1}),
                "--wait", "--timeout", "60"])
            assert probe.returncode == 0, probe.stderr
            triage = stack.run(["submit", "support-triage", json.dumps(
                {"customer_id": "c-1", "ticket_id": "t-1",
                 "message": f"my card {CARD} was charged twice"}),
                "--wait", "--timeout", "60"])
            assert triage.returncode == 0, triage.stderr
            assert '"status": "succeeded"' in triage.stdout
            assert stack.run(["status"]).returncode == 0
            assert stack.run(["status", "--json"]).returncode == 0
            time.sleep(2)  # the last events reach the receiver and Flower
            _, api_tasks = flower.get("/api/tasks", LOGIN)
            _, tasks_page = flower.get("/tasks", LOGIN)
    finally:
        flower.stop()
        fleet.stop_all()

    # The payloads did travel (the search below would prove nothing otherwise).
    orchestrator.configure(Settings(redis_url=stack.redis_url,
                                    database_url=stack.database_url))
    try:
        assert CARD in orchestrator.get(json.loads(probe.stdout)["id"]).payload["tag"]
    finally:
        runtime.current().close()

    # Celery's events carry labels and summaries: a retried step's task-received its
    # label, every task-succeeded a summary with the tokens.
    received = [e for e in events.events if e.get("type") == "task-received"]
    retried = [e for e in received if e.get("retries")]
    assert retried, "no retried step seen"
    assert all(re.match(r"step \d+/\d+ '[\w-]+' of [\w-]+ [0-9a-f-]{36}$", e["args"])
               for e in received), [e["args"] for e in received]
    succeeded = [e["result"] for e in events.events if e.get("type") == "task-succeeded"]
    assert len(succeeded) >= 7 and all(": done in " in r for r in succeeded), succeeded
    assert any(re.search(r"tokens [1-9]\d* \(", r) for r in succeeded), succeeded
    # Flower lists the label (the args column).
    listed = json.loads(api_tasks)
    assert listed and all(task["args"].startswith("step ") for task in listed.values())
    assert 'data-column="args"' in tasks_page

    stack.texts["celery events"] = events.dump()
    stack.texts["flower /api/tasks"] = api_tasks
    stack.texts["flower /tasks"] = tasks_page
    stack.texts["flower log"] = flower.log_path.read_text(errors="replace")
    for log in stack.log_dir.glob("worker-*.log"):
        stack.texts[log.name] = log.read_text(errors="replace")
    assert "succeeded in" in "".join(t for n, t in stack.texts.items() if n.startswith("worker"))
    assert not _leaks(stack.texts), _leaks(stack.texts)


def test_config_errors_and_reshard_show_no_secret(stack: Stack) -> None:
    texts_before = set(stack.texts)
    bad_url = f"postgres://{ROLE}:{DB_PASSWORD}@127.0.0.1:5432/orch"
    bad = stack.run(["status"], stack.env | {"ORCH_DATABASE_URL": bad_url})
    assert bad.returncode == 2 and "ORCH_DATABASE_URL" in bad.stderr, bad.stderr
    assert DB_PASSWORD not in bad.stderr, bad.stderr
    no_host = stack.run(["status"], stack.env | {"ORCH_REDIS_URL": f"{REDIS_PASSWORD}@h:1"})
    assert no_host.returncode == 2 and "ORCH_REDIS_URL" in no_host.stderr, no_host.stderr
    to = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{stack.redis_port}/1"
    moved = stack.run(["state", "reshard", "--to", to])
    assert moved.returncode == 0, moved.stderr
    wrong = stack.run(["state", "reshard", "--to", f"redis://:x{REDIS_PASSWORD}@127.0.0.1:"
                                                    f"{stack.redis_port}/1"])
    assert wrong.returncode == 2 and "--to" in wrong.stderr, wrong.stderr
    not_redis = stack.run(["state", "reshard", "--to", bad_url])
    assert not_redis.returncode == 2 and "--to" in not_redis.stderr, not_redis.stderr
    worker = subprocess.run([sys.executable, "-m", "workers", "--queues", "agents"],
                            env=_clean_env(stack.env | {"ORCH_DATABASE_URL": bad_url}),
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert worker.returncode == 2, worker.stderr
    stack.texts["python -m workers (bad setting)"] = worker.stdout + worker.stderr
    new = {name: text for name, text in stack.texts.items() if name not in texts_before}
    assert not _leaks(new), _leaks(new)


def test_up_writes_every_variable_to_a_private_file_and_prints_none(
        stack: Stack, tmp_path: Path) -> None:
    env = _clean_env(stack.env | {
        "ORCH_DATA_DIR": str(tmp_path / "data"), "ORCH_AGENTS_CONCURRENCY": "1",
        "ORCH_LLM_WORKER_CONCURRENCY": "2", "ORCH_TOOLS_WORKER_CONCURRENCY": "2"})
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([ORCHESTRATOR, "up"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        assert wait_for(lambda: proc.poll() is not None or (b"fleet up" in log.read_bytes()
                        and b"ORCH_DATABASE_URL=" in log.read_bytes()), 120), log.read_text()
        assert proc.poll() is None, log.read_text()
        shown = log.read_text()
        found = re.search(r"source (\S+)", shown)
        assert found, shown
        env_file = Path(found.group(1))
        assert env_file.stat().st_mode & 0o777 == 0o600
        exports = env_file.read_text()
        for secret in (LLM_KEY, FALLBACK_KEY, DB_PASSWORD, REDIS_PASSWORD, FLOWER_PASSWORD):
            assert secret in exports
        assert f"redis://:***@127.0.0.1:{stack.redis_port}/0" in shown
        # Another shell with nothing but the file reaches the fleet.
        bare = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        reached = subprocess.run(
            ["bash", "-c", f'source "{env_file}" && exec "{ORCHESTRATOR}" status --json'],
            env={**bare, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
            timeout=60, cwd=REPO)
        assert reached.returncode == 0, reached.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            # up stops its workers, flusher and reconciler (each in a process group of its
            # own) on SIGINT; a SIGKILL would leave them running.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    assert not env_file.exists()
    texts = {"orchestrator up": log.read_text(errors="replace"),
             "status from the env file": reached.stdout + reached.stderr}
    for child in (tmp_path / "data" / "logs").glob("*.log"):
        texts[child.name] = child.read_text(errors="replace")
    assert not _leaks(texts), _leaks(texts)


def test_flower_keeps_a_password_with_a_comma_whole_and_refuses_an_empty_one(
        stack: Stack) -> None:
    flower = FlowerProcess(stack.env, stack.log_dir)
    try:
        flower.wait_ready()
        assert flower.get("/", LOGIN)[0] == 200
        assert flower.get("/", None)[0] == 401
        user_part, _, rest = LOGIN.partition(",")  # "admin:Fl0wer" and "planted-PW"
        assert flower.get("/", user_part)[0] == 401
        assert flower.get("/", rest)[0] == 401
        assert flower.get("/", f"{rest}:")[0] == 401
    finally:
        flower.stop()
    empty = stack.run(["flower", "--port", str(free_port())],
                      stack.env | {"ORCH_FLOWER_PASSWORD": ""}, timeout=30)
    assert empty.returncode == 2 and "ORCH_FLOWER_PASSWORD is empty" in empty.stderr


# --- Redis or PostgreSQL out of reach ---------------------------------------------------

def _closed_port() -> int:
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_services_out_of_reach_are_one_line_naming_the_variable(
        settings: Settings, stack: Stack) -> None:
    env = settings.environment()
    run = stack.run
    port = _closed_port()
    broker = redis.Redis.from_url(settings.redis_url or "")
    with psycopg.connect(_psycopg(settings.database_url or "")) as conn:
        rows_before = conn.execute("SELECT count(*) FROM invocations").fetchone()

    redis_down = env | {"ORCH_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"}
    for args in (["submit", "pipeline-5", '{"n": 1}'], ["status"]):
        out = run(args, redis_down)
        line = _one_line(out)
        assert out.returncode == 1, out.stderr
        assert line.startswith("error: ORCH_REDIS_URL: ")
        assert f"redis://:***@127.0.0.1:{port}/0" in line and "connection refused" in line

    wrong_password = env | {"ORCH_REDIS_URL": f"redis://:wrong@127.0.0.1:{stack.redis_port}/0"}
    out = run(["submit", "pipeline-5", '{"n": 1}'], wrong_password)
    assert out.returncode == 2 and "refused the password" in _one_line(out), out.stderr

    pg_down = env | {"ORCH_DATABASE_URL":
                     f"postgresql+psycopg://{ROLE}:{DB_PASSWORD}@127.0.0.1:{port}/orch"}
    out = run(["submit", "pipeline-5", '{"n": 1}'], pg_down)
    line = _one_line(out)
    assert out.returncode == 1 and line.startswith("error: ORCH_DATABASE_URL: "), out.stderr
    assert f"{ROLE}:***@127.0.0.1:{port}/orch" in line

    no_database = env | {"ORCH_DATABASE_URL": (settings.database_url or "") + "_missing"}
    out = run(["status"], no_database)
    assert out.returncode == 2 and "ORCH_DATABASE_URL" in _one_line(out), out.stderr

    shards_down = env | {"ORCH_STATE_REDIS_URLS": f"redis://127.0.0.1:{port}/0"}
    out = run(["state", "reshard", "--to", settings.redis_url or ""], shards_down)
    assert out.returncode == 1 and "ORCH_STATE_REDIS_URLS" in _one_line(out), out.stderr

    # Nothing was written by any of them.
    assert broker.llen("agents") == 0
    with psycopg.connect(_psycopg(settings.database_url or "")) as conn:
        assert conn.execute("SELECT count(*) FROM invocations").fetchone() == rows_before


def test_submit_raises_an_orchestrator_error_naming_the_variable(settings: Settings) -> None:
    from orchestrator.errors import ServiceUnavailable

    port = _closed_port()
    orchestrator.configure(settings.model_copy(
        update={"redis_url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"}))
    with pytest.raises(ServiceUnavailable) as down:
        orchestrator.submit("pipeline-5", {"n": 1})
    assert down.value.variable == "ORCH_REDIS_URL" and REDIS_PASSWORD not in str(down.value)
    assert down.value.__cause__ is not None  # the driver's error, chained
    orchestrator.configure(settings.model_copy(update={
        "database_url": f"postgresql+psycopg://{ROLE}:{DB_PASSWORD}@127.0.0.1:{port}/orch"}))
    with pytest.raises(ServiceUnavailable) as down:
        orchestrator.submit("pipeline-5", {"n": 1})
    assert down.value.variable == "ORCH_DATABASE_URL" and DB_PASSWORD not in str(down.value)
    with pytest.raises(ServiceUnavailable):
        orchestrator.get(str(uuid.uuid4()))
