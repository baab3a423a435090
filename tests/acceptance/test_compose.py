"""compose.yaml cannot rot: its shape is checked, and each service's command is run
briefly against the local services (Docker does not run here)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from config import Settings
from orchestrator.cli.app import app
from orchestrator.devstack.servers.ports import free_port
from workers.profiles import profiles

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, object]] = COMPOSE["services"]
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")


def _command(name: str) -> list[str]:
    command = SERVICES[name].get("command", [])
    assert isinstance(command, list)
    return [str(part) for part in command]


def test_redis_keeps_acknowledged_writes_and_never_evicts() -> None:
    command = " ".join(_command("redis"))
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_every_worker_profile_has_a_replicated_service() -> None:
    settings = Settings()
    for queue, profile in profiles(settings).items():
        matching = [name for name in SERVICES if "worker" in _command(name)
                    and queue in _command(name)[_command(name).index("--queues") + 1]]
        assert matching, f"no compose service consumes queue {queue}"
        service = SERVICES[matching[0]]
        assert service["deploy"]["replicas"] >= 1  # type: ignore[index]
        command = _command(matching[0])
        assert command[command.index("--pool") + 1] == profile.pool


def test_no_secret_is_written_in_the_file() -> None:
    text = (REPO / "compose.yaml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|API_KEYS)\s*:", line):
            assert "${" in line, f"secret literal in compose.yaml: {line.strip()}"


def test_every_orchestrator_subcommand_used_exists() -> None:
    runner = CliRunner()
    for name, service in SERVICES.items():
        command = service.get("command")
        if not isinstance(command, list) or command[0] != "orchestrator":
            continue
        words = [w for w in command[1:3] if not str(w).startswith("-")]
        result = runner.invoke(app, [*words[:2], "--help"])
        assert result.exit_code == 0, f"{name}: `orchestrator {' '.join(words)}` is unknown"


@contextmanager
def _running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        # The console script does not put the working directory on sys.path, and the
        # test settings import tests.workflows.
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not seen:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.timeout(240)
def test_each_service_command_runs_against_local_services(
    settings: Settings, tmp_path: Path
) -> None:
    env = settings.environment()
    migrate = subprocess.run([ORCHESTRATOR, *_command("migrate")[1:]], env={**os.environ, **env},
                             capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    for name in ("worker-agents", "worker-llm", "worker-tools"):
        log = tmp_path / f"{name}.log"
        with _running([ORCHESTRATOR, *_command(name)[1:]], env, log) as proc:
            _wait_for(log, " ready.", proc, timeout=60)
            os.killpg(proc.pid, signal.SIGTERM)  # warm shutdown, as `docker stop` does
            assert proc.wait(30) == 0, log.read_text()[-2000:]
    for name in ("flusher", "reconciler"):
        log = tmp_path / f"{name}.log"
        with _running([ORCHESTRATOR, *_command(name)[1:]], env, log) as proc:
            _wait_for(log, "started", proc, timeout=30)
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(30) == 0


@pytest.mark.timeout(120)
def test_metrics_and_flower_services_answer(settings: Settings, tmp_path: Path) -> None:
    env = settings.environment()
    port = free_port()
    argv = [ORCHESTRATOR, *_command("metrics")[1:]]
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--address") + 1] = "127.0.0.1"
    log = tmp_path / "metrics.log"
    with _running(argv, env, log) as proc:
        _wait_for(log, "metrics on", proc, timeout=30)
        assert _get_eventually(f"http://127.0.0.1:{port}/metrics").status_code == 200
    port = free_port()
    argv = [ORCHESTRATOR, *_command("flower")[1:]]
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--address") + 1] = "127.0.0.1"
    secret = "s3cret-for-test"
    flower_env = env | {"ORCH_FLOWER_USER": "ops", "ORCH_FLOWER_PASSWORD": secret}
    log = tmp_path / "flower.log"
    with _running(argv, flower_env, log):
        url = f"http://127.0.0.1:{port}/api/workers"
        assert _get_eventually(url).status_code == 401
        assert httpx.get(url, auth=("ops", secret), timeout=10).status_code == 200
    assert secret not in log.read_text(errors="replace")
    refused = subprocess.run([ORCHESTRATOR, "flower"], env={**os.environ, **env},
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "ORCH_FLOWER_USER and ORCH_FLOWER_PASSWORD must be set" in refused.stderr


def _get_eventually(url: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
