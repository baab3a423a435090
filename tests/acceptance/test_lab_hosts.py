"""``orchestrator loadtest --hosts 2``, as a user runs it (root, with ``ip netns``): the
worker groups run on two simulated hosts, each a network and UTS namespace of its own
reaching the lab's Redis, PostgreSQL and simulators over a veth link. Every invocation
succeeds, workers on both hosts did work (claim owners and Celery nodes name both
hostnames), the fleet-wide limiter kept the provider within its limit, a host reaches
Redis only over the bridge, and nothing of the hosts is left afterwards; also after an
exception, and what a crashed run left is removed at the next start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.devstack import netns

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    netns.unavailable() is not None,
    reason=f"simulated hosts need root, `ip` and `unshare` ({netns.unavailable()})")


def _leftovers(owner: int) -> list[str]:
    namespaces, links = netns.existing()
    return [n for n in namespaces if n.startswith(f"orch-lab-{owner}-")] + [
        n for n in links if n == f"olb{owner}" or n.startswith(f"olv{owner}-")]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_hosts_share_the_work_and_reach_the_services_only_over_the_bridge(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli.app", "loadtest", "pilot-12k",
         "--profile", "production", "--minutes", "0.5", "--rate", "0.6", "--seed", "5",
         "--hosts", "2", "--no-faults", "--out", str(tmp_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stdout, _ = proc.communicate(timeout=220)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout[-5000:]
    assert "--hosts 2: host-1 (10.213." in stdout
    data = json.loads((tmp_path / "pilot-12k.json").read_text())

    hosts = data["hosts"]
    assert [h["hostname"] for h in hosts["hosts"]] == ["host-1", "host-2"]
    assert [h["namespace"] for h in hosts["hosts"]] == [
        f"orch-lab-{proc.pid}-1", f"orch-lab-{proc.pid}-2"]
    # Each host reaches Redis at the bridge address, and its own loopback is its own.
    assert hosts["redis_reached"] == {
        "host-1": {"via_bridge": True, "via_loopback": False},
        "host-2": {"via_bridge": True, "via_loopback": False}}

    summary = data["profiles"]["production"]["summary"]
    assert summary["submitted"] > 24
    assert summary["succeeded"] + summary["degraded"] == summary["submitted"]
    assert summary["lost_state_updates"] == 0 and summary["extra_state_updates"] == 0
    # Workers of both hosts ran steps: their claim owners carry each host's name ...
    assert set(summary["claim_owner_hosts"]) == {"host-1", "host-2"}
    assert all(n > 0 for n in summary["claim_owner_hosts"].values())
    # ... and so do the Celery nodes, each host's llm worker among them.
    assert summary["node_hosts"] == ["host-1", "host-2"]
    nodes = summary["celery_nodes"]
    assert nodes["llm@host-1"] > 0 and nodes["llm@host-2"] > 0
    # The limiter held the provider's concurrency across both hosts' llm workers.
    assert 0 < summary["provider_peak_in_flight"] <= summary["provider_concurrency"]
    assert summary["provider_429s"] == 0
    assert _leftovers(proc.pid) == []


def test_hosts_are_removed_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), netns.host_network(2) as plan:
        assert len(_leftovers(plan.owner)) == 5  # 2 namespaces, 2 veths, the bridge
        assert netns.reaches(plan.hosts[0], plan.gateway, 1) is False  # nothing listens
        raise RuntimeError("the run failed")
    assert _leftovers(os.getpid()) == []


def test_leftovers_of_a_dead_run_are_removed_at_the_next_start() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    owner = int(dead.stdout)
    ip = shutil.which("ip") or "ip"
    left = netns.plan(1, owner=owner, octet=netns.free_octet([], 250))
    try:
        for cmd in left.setup_commands():
            subprocess.run([ip, *cmd[1:]], check=True, capture_output=True)
        assert len(_leftovers(owner)) == 3
        with netns.host_network(2) as plan:
            assert _leftovers(owner) == []
            assert plan.owner == os.getpid()
    finally:
        for cmd in left.teardown_commands():
            subprocess.run([ip, *cmd[1:]], capture_output=True)
    assert _leftovers(owner) == []
