"""Run by the breaker tests in separate processes (importable by spawn)."""

from __future__ import annotations

import threading
import time

import pybreaker
import redis

from orchestrator.breakers import BreakerPolicy, FleetBreaker


def race_for_probe(redis_url: str, name: str, threads: int) -> tuple[int, int]:
    """Many threads call at once after the reset timeout; returns (ran, refused).

    Processes start one after another (spawn imports the package in each), so every
    process says it is ready and waits for the test's go before any thread calls: else
    the first one's probe can close the breaker before the last one has started.
    """
    client = redis.Redis.from_url(redis_url)
    breaker = FleetBreaker(client, name, BreakerPolicy(window=10, min_calls=4, threshold=0.5,
                                                       reset_timeout=1.0, probe_timeout=5.0),
                           owner=lambda: f"probe-{threading.get_ident()}")
    ran = refused = 0
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def call() -> None:
        nonlocal ran, refused
        start.wait()

        def probe() -> str:
            client.incr(f"test:probes:{name}")
            time.sleep(0.5)
            return "ok"

        try:
            breaker.call(probe, is_failure=lambda exc: True)
            with lock:
                ran += 1
        except pybreaker.CircuitBreakerError:
            with lock:
                refused += 1

    workers = [threading.Thread(target=call) for _ in range(threads)]
    client.incr(f"test:ready:{name}")
    deadline = time.monotonic() + 60
    while not client.exists(f"test:go:{name}"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no go for {name} within 60 s")
        time.sleep(0.005)
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return ran, refused
