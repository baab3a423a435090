"""``--hosts N`` without running anything: the address plan, the ``ip`` commands that build
and remove it, the command line of a process on a host, which leftovers count as stale,
and the evidence the lab reads back (claim owners, Celery nodes)."""

from __future__ import annotations

import shlex

import pytest

from orchestrator.devstack import netns
from orchestrator.devstack.processes import WorkerProcess
from orchestrator.lab.hosts import (
    ClaimOwners,
    LabHosts,
    as_processes,
    distinct_hosts,
    node_tasks,
    owner_host,
)
from orchestrator.lab.report import host_lines


def test_plan_gives_each_host_a_namespace_hostname_address_and_link_of_the_run() -> None:
    plan = netns.plan(3, owner=4194303, octet=7)
    assert plan.subnet == "10.213.7.0/24" and plan.gateway == "10.213.7.1"
    assert plan.bridge == "olb4194303"
    assert [h.hostname for h in plan.hosts] == ["host-1", "host-2", "host-3"]
    assert [h.namespace for h in plan.hosts] == [
        "orch-lab-4194303-1", "orch-lab-4194303-2", "orch-lab-4194303-3"]
    assert [h.address for h in plan.hosts] == ["10.213.7.11", "10.213.7.12", "10.213.7.13"]
    # Linux interface names hold 15 characters, whatever the pid (pid_max is 4194304).
    assert all(len(name) <= 15 for name in [plan.bridge, *(h.link for h in plan.hosts)])


@pytest.mark.parametrize(("count", "octet"), [(0, 1), (201, 1), (2, 256)])
def test_plan_refuses_counts_and_octets_out_of_range(count: int, octet: int) -> None:
    with pytest.raises(ValueError):
        netns.plan(count, owner=1, octet=octet)


def test_setup_builds_the_bridge_first_then_each_host_with_loopback_and_a_default_route() -> None:
    plan = netns.plan(2, owner=42, octet=9)
    cmds = [shlex.join(c) for c in plan.setup_commands()]
    assert cmds[:3] == ["ip link add olb42 type bridge", "ip addr add 10.213.9.1/24 dev olb42",
                        "ip link set olb42 up"]
    assert "ip netns add orch-lab-42-2" in cmds
    assert "ip link add olv42-2 type veth peer name eth0 netns orch-lab-42-2" in cmds
    assert "ip link set olv42-2 master olb42 up" in cmds
    assert "ip -n orch-lab-42-2 link set lo up" in cmds
    assert "ip -n orch-lab-42-2 addr add 10.213.9.12/24 dev eth0" in cmds
    assert "ip -n orch-lab-42-2 route add default via 10.213.9.1" in cmds
    # A namespace exists before its link is moved into it.
    assert cmds.index("ip netns add orch-lab-42-1") < cmds.index(
        "ip link add olv42-1 type veth peer name eth0 netns orch-lab-42-1")


def test_teardown_removes_every_link_and_namespace_of_the_plan() -> None:
    plan = netns.plan(2, owner=42, octet=9)
    cmds = [shlex.join(c) for c in plan.teardown_commands()]
    assert cmds == ["ip link del olv42-1", "ip link del olv42-2", "ip link del olb42",
                    "ip netns del orch-lab-42-1", "ip netns del orch-lab-42-2"]


def test_a_wrapped_command_sets_the_hostname_then_execs_the_command_in_the_namespace() -> None:
    host = netns.plan(1, owner=42, octet=9).hosts[0]
    argv = host.wrap(["/venv/bin/python", "-m", "workers", "--hostname", "llm@%h", "it's"])
    assert argv[:7] == ["ip", "netns", "exec", "orch-lab-42-1", "unshare", "--uts", "--"]
    assert argv[7:9] == ["sh", "-c"]
    script = argv[9]
    assert script.startswith("hostname host-1 && exec /venv/bin/python -m workers")
    # The original arguments come back intact through the shell.
    assert shlex.split(script.partition("exec ")[2]) == [
        "/venv/bin/python", "-m", "workers", "--hostname", "llm@%h", "it's"]


def test_a_worker_on_a_host_is_named_after_that_host(tmp_path: object) -> None:
    from pathlib import Path

    host = netns.plan(2, owner=42, octet=9).hosts[1]
    worker = WorkerProcess({}, "llm", log_dir=Path(str(tmp_path)), name="llm", host=host)
    assert worker.node_name == "llm@host-2"
    assert worker.argv[:4] == ["ip", "netns", "exec", "orch-lab-42-2"]
    assert worker.log_path.name == "worker-llm-host-2.log"


def test_free_octet_skips_subnets_in_use_and_wraps() -> None:
    used = ["127.0.0.1/8", "10.213.5.1/24", "10.213.6.77/24", "192.0.2.2/24"]
    assert netns.free_octet(used, 5) == 7
    assert netns.free_octet(["10.213.254.1/24"], 254) == 1
    assert netns.free_octet(used, 9) == 9


def test_only_leftovers_of_dead_runs_are_stale() -> None:
    names = ["orch-lab-100-1", "orch-lab-100-2", "orch-lab-200-1", "olb100", "olv100-1",
             "olb200", "eth0", "lo", "orch-lab-x-1", "olbx"]
    namespaces, links = netns.stale(names, alive=lambda pid: pid == 200)
    assert namespaces == ["orch-lab-100-1", "orch-lab-100-2"]
    assert links == ["olb100", "olv100-1"]


def test_at_moves_a_url_to_another_address_keeping_user_port_and_path() -> None:
    assert (netns.at("postgresql+psycopg://postgres@127.0.0.1:5433/orchestrator", "10.213.9.1")
            == "postgresql+psycopg://postgres@10.213.9.1:5433/orchestrator")
    assert netns.at("redis://127.0.0.1:6390/0", "10.213.9.1") == "redis://10.213.9.1:6390/0"
    assert netns.at("http://127.0.0.1:8900/v1", "127.0.0.1") == "http://127.0.0.1:8900/v1"


def test_without_namespaces_the_lab_runs_as_processes_on_loopback() -> None:
    here = LabHosts(None, as_processes(3, "not root"))
    assert here.address == "127.0.0.1" and here.hosts == () and here.listen == ()
    assert here.place(5) is None
    assert here.note.startswith("--hosts 3: every worker group runs as processes on this "
                                "host (not root)")


def test_with_namespaces_services_listen_on_the_bridge_and_workers_go_round_robin() -> None:
    plan = netns.plan(2, owner=42, octet=9)
    placed = LabHosts(plan, "two hosts")
    assert placed.address == "10.213.9.1" and placed.listen == ("10.213.9.1",)
    assert placed.trust == ("10.213.9.0/24",)
    assert [h.hostname for h in (placed.place(0), placed.place(1), placed.place(2)) if h] == [
        "host-1", "host-2", "host-1"]


def test_claim_owners_count_each_step_once_per_owner_host() -> None:
    owners = ClaimOwners()
    a = b"host-1/boot/4026531836/17/abc/140"
    owners.add("inv-1", {b"claim:0": a + b"|1700000000000", b"done:1": b"{}"})
    owners.add("inv-1", {b"claim:0": a + b"|1700000001000"})  # the same claim, renewed
    owners.add("inv-2", {b"claim:2": b"host-2/boot/4026531836/17/def/9|1"})
    assert owners.by_host() == {"host-1": 1, "host-2": 1}
    assert owner_host("host-2/boot/ns/1/n/2") == "host-2"


def test_tasks_per_node_and_the_hosts_among_the_nodes() -> None:
    stats = {"llm@host-2": {"total": {"tasks.llm": 4, "tasks.x": 1}},
             "agents@host-1": {"total": {}}, "tools@host-1": {}}
    nodes = node_tasks(stats)
    assert nodes == {"agents@host-1": 0, "llm@host-2": 5, "tools@host-1": 0}
    assert distinct_hosts(nodes) == ["host-1", "host-2"]
    assert node_tasks(None) == {}


def test_host_lines_say_what_each_host_reached_redis_over() -> None:
    placed = LabHosts(netns.plan(2, owner=42, octet=9))
    hosts = {**placed.describe(), "redis_reached": {
        "host-1": {"via_bridge": True, "via_loopback": False},
        "host-2": {"via_bridge": False, "via_loopback": True}}}
    first, second = host_lines(hosts)
    assert first == ("host-1: namespace orch-lab-42-1, 10.213.9.11; Redis over the bridge "
                     "(10.213.9.1): yes, over its own loopback: no")
    assert second.endswith("(10.213.9.1): NO, over its own loopback: YES")
    assert host_lines({"hosts": [], "note": ""}) == []


def test_without_root_or_ip_lab_hosts_says_the_workers_run_as_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.lab.hosts import lab_hosts

    monkeypatch.setattr(netns, "unavailable", lambda: "no `ip`")
    with lab_hosts(2) as placed:
        assert placed.plan is None and placed.address == "127.0.0.1"
        assert placed.note == as_processes(2, "no `ip`")
    with lab_hosts(1) as placed:
        assert placed.plan is None and placed.note == ""
