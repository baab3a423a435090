"""Latency samples buffered in a process reach Redis once each: at ``push_at``, from the
timer, and never twice across a fork."""

from __future__ import annotations

import os

import redis

from config import Settings
from orchestrator import telemetry
from orchestrator.telemetry import SampleBuffer
from tests.procs import wait_for


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url or "")


def test_samples_go_out_together_at_push_at(settings: Settings) -> None:
    client = _client(settings)
    buffer = SampleBuffer(client, every=1, push_at=5, push_seconds=3600)
    for i in range(4):
        buffer.add("t", i / 1000)
    assert telemetry.samples(client, "t") == []  # held: no round trip per sample
    buffer.add("t", 0.004)
    assert sorted(telemetry.samples(client, "t")) == [0.0, 0.001, 0.002, 0.003, 0.004]


def test_a_quiet_buffer_is_pushed_by_its_timer(settings: Settings) -> None:
    client = _client(settings)
    buffer = SampleBuffer(client, every=1, push_at=1000, push_seconds=0.2)
    buffer.add("quiet", 0.5)
    assert wait_for(lambda: telemetry.samples(client, "quiet") == [0.5], timeout=5)


def test_a_forked_child_pushes_only_its_own_samples(settings: Settings) -> None:
    client = _client(settings)
    buffer = SampleBuffer(client, every=1, push_at=1000, push_seconds=3600)
    buffer.add("fork", 1.0)  # the parent's, waiting
    pid = os.fork()
    if pid == 0:  # the child: one sample of its own, pushed at once
        try:
            buffer.add("fork", 2.0)
            buffer.push()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert telemetry.samples(client, "fork") == [2.0]
    buffer.push()
    assert sorted(telemetry.samples(client, "fork")) == [1.0, 2.0]
