#!/usr/bin/env bash
# The whole check, as CI runs it: install, lint, type-check, then every test.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k redeliv # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# [dev] brings [demo] (simulators, embedded servers) and [bench] (plotting): the suite uses both.
.venv/bin/python -m pip install --quiet -e ".[dev]"

bash scripts/ensure_services.sh

.venv/bin/ruff check .
.venv/bin/mypy orchestrator config tasks workers scripts tests
.venv/bin/python -m pytest -q "$@"
