"""Run the HTTP tool simulator in the foreground.

    python scripts/sim_tools.py --port 8901 --latency 0.05 --error-rate 0.01 --hang-rate 0.02

Then: ORCH_TOOLS_URL=http://127.0.0.1:8901. Stats at /stats; switch an outage with
POST /admin/outage {"tool": "lookup_order", "mode": "hang"} (mode null ends it).
"""

from __future__ import annotations

import argparse

from orchestrator.devstack.simulators.server import serve_forever
from orchestrator.devstack.simulators.tool_server import ToolSimConfig, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--latency", type=float, default=0.05, help="mean seconds")
    parser.add_argument("--jitter", type=float, default=0.01, help="std dev seconds")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of 503s")
    parser.add_argument("--hang-rate", type=float, default=0.0, help="share that hang")
    parser.add_argument("--hang-seconds", type=float, default=60.0)
    args = parser.parse_args()
    if not (0 <= args.error_rate <= 1 and 0 <= args.hang_rate <= 1):
        parser.error("--error-rate and --hang-rate are shares between 0 and 1")
    config = ToolSimConfig(latency=args.latency, jitter=args.jitter, error_rate=args.error_rate,
                           hang_rate=args.hang_rate, hang_seconds=args.hang_seconds)
    serve_forever(create_app(config), args.host, args.port)


if __name__ == "__main__":
    main()
