"""``scripts/bench_state.py --redis-server``: a binary that is not a Redis server is
refused with the reason before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_state.py"


@pytest.mark.parametrize(("binary", "said"), [
    ("/bin/echo", "is not a redis-server"),
    ("/nonexistent/redis-server", "does not run as a redis-server"),
])
def test_a_redis_server_that_is_not_one_is_refused(binary: str, said: str,
                                                   tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--redis-server", binary,
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"--redis-server: {binary} {said}" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was made
