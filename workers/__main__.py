"""``python -m workers --queues Q [--pool P] [--concurrency N] [--hostname H] [--loglevel L]
[celery worker options ...]``: become a Celery worker of the profile for ``Q``.

The one place a worker's command line is built (from :mod:`workers.profiles`);
``orchestrator worker`` and the local stack's worker processes both come through here.
Options it does not know pass through to ``celery worker``.
"""

from __future__ import annotations

import argparse
import os
import sys

from config import InvalidSettings, load_settings
from workers.profiles import for_queues

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--queues", "-Q", required=True, help="comma-separated queue names")
    parser.add_argument("--pool", default=None, help="prefork, threads, solo, ...")
    parser.add_argument("--concurrency", type=int, default=None, help="pool size")
    parser.add_argument("--hostname", default=None,
                        help="node name (default: <queues>-<pid>@<host>)")
    parser.add_argument("--loglevel", default="INFO", help="Celery log level")
    args, passthrough = parser.parse_known_args(argv)
    try:
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        settings = load_settings()
        profile = for_queues(settings, queues, pool=args.pool, concurrency=args.concurrency)
    except InvalidSettings as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except ValueError as exc:
        print(f"error: --queues/--pool/--concurrency: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    # Unique per process (exec keeps the pid), so two workers on one host never clash.
    hostname = args.hostname or f"{profile.name}-{os.getpid()}@%h"
    command = [sys.executable, "-m", "celery",
               *profile.argv(hostname=hostname, loglevel=args.loglevel), *passthrough]
    if settings.log_format == "json":
        command.insert(3, "--quiet")  # one JSON object a line: no start banner (printed)
    # Exec, so signals (Ctrl-C, SIGTERM for a warm shutdown) reach Celery directly.
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
