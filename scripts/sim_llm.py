"""Run the OpenAI-compatible LLM provider simulator in the foreground.

    python scripts/sim_llm.py --port 8900 --keys sim-key-1,sim-key-2 --rpm 600 \
        --concurrency 20 --latency 0.5

Like a gateway that counts fixed one-minute windows on its own clock, answers every 429
with `retry-after: 60` and names its headers its own way:

    python scripts/sim_llm.py --rpm 200 --window fixed --window-phase 0.4 \
        --retry-after 60 --header-style gateway --header-scope key

Then: ORCH_LLM_BASE_URL=http://127.0.0.1:8900/v1 ORCH_LLM_API_KEYS=sim-key-1,sim-key-2.
Stats at /stats, runtime changes with POST /admin/config (e.g. {"outage": true}).
"""

from __future__ import annotations

import argparse

from orchestrator.devstack.simulators.llm_provider import (
    HEADER_STYLES,
    WINDOWS,
    LLMSimConfig,
    create_app,
)
from orchestrator.devstack.simulators.server import serve_forever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--keys", default="sim-key-1,sim-key-2", help="comma-separated")
    parser.add_argument("--rpm", type=int, default=600, help="requests/minute per key")
    parser.add_argument("--tpm", type=int, default=400_000, help="tokens/minute per key")
    parser.add_argument("--concurrency", type=int, default=20, help="in flight per key")
    parser.add_argument("--latency", type=float, default=0.5, help="mean seconds")
    parser.add_argument("--jitter", type=float, default=0.1, help="std dev seconds")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of 500s")
    parser.add_argument("--hang-rate", type=float, default=0.0, help="share that hang")
    parser.add_argument("--completion-tokens", type=int, default=40)
    parser.add_argument("--window", choices=WINDOWS, default="rolling",
                        help="rolling 60 s, or fixed one-minute windows on this clock")
    parser.add_argument("--window-phase", type=float, default=0.0,
                        help="fixed windows start this many seconds past each minute")
    parser.add_argument("--retry-after", type=float, default=None,
                        help="every 429 says this many seconds (default: the real wait)")
    parser.add_argument("--header-style", choices=HEADER_STYLES, default="openai",
                        help="rate-limit header dialect")
    parser.add_argument("--header-scope", default="key",
                        help="<scope> in the gateway style's x-ratelimit-<scope>-* names")
    args = parser.parse_args()
    keys = tuple(k.strip() for k in args.keys.split(",") if k.strip())
    if not keys or min(args.rpm, args.tpm, args.concurrency) <= 0:
        parser.error("need at least one key and positive --rpm, --tpm, --concurrency")
    if args.retry_after is not None and args.retry_after <= 0:
        parser.error("--retry-after must be positive")
    if not (0 <= args.error_rate <= 1 and 0 <= args.hang_rate <= 1):
        parser.error("--error-rate and --hang-rate are shares between 0 and 1")
    config = LLMSimConfig(keys=keys, rpm=args.rpm, tpm=args.tpm,
                          concurrency=args.concurrency, latency=args.latency,
                          jitter=args.jitter, error_rate=args.error_rate,
                          hang_rate=args.hang_rate, completion_tokens=args.completion_tokens,
                          window=args.window, window_phase=args.window_phase % 60,
                          retry_after=args.retry_after, header_style=args.header_style,
                          header_scope=args.header_scope)
    serve_forever(create_app(config), args.host, args.port)


if __name__ == "__main__":
    main()
