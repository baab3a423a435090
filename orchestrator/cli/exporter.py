"""``orchestrator metrics``: the Prometheus endpoint of :mod:`orchestrator.metrics`, served
from this process (or one scrape printed)."""

from __future__ import annotations

import logging
import sys
import time

from prometheus_client import generate_latest, start_http_server
from prometheus_client.registry import CollectorRegistry

from orchestrator import logs, subsystems
from orchestrator.metrics import registry

log = logging.getLogger(__name__)


def _registry() -> CollectorRegistry:
    sub = subsystems.current()
    sub.load_workflows()
    return registry(sub)


def print_scrape() -> None:
    """Write one scrape, in Prometheus's text format, to stdout."""
    sys.stdout.write(generate_latest(_registry()).decode())


def serve(*, port: int, address: str) -> None:
    """Serve ``/metrics`` on ``address:port`` until Ctrl-C; a scrape part that fails
    (a store out of reach) is logged in ``ORCH_LOG_FORMAT``."""
    logs.configure(subsystems.current().settings.log_format)
    found = _registry()
    start_http_server(port, addr=address, registry=found)
    log.info("exporter started: metrics on http://%s:%d/metrics (Ctrl-C stops)", address,
             port)
    while True:  # the server runs in a daemon thread
        time.sleep(3600)
