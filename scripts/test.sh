#!/usr/bin/env bash
# The whole check, as CI runs it: install, lint, type-check, then every test.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k redeliv # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/acceptance/test_prometheus.py runs a real Prometheus (Debian's package): installed
# here when missing and apt is at hand (CI runs as root). Only the binary is used: the
# packaged service is kept from starting (policy-rc.d) and stopped if it started anyway.
install_prometheus() {
  command -v prometheus >/dev/null 2>&1 && return 0
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "prometheus: not installed (needs apt-get as root); its acceptance test is skipped"
    return 0
  fi
  echo "installing prometheus (Debian package) for the acceptance tests"
  local policy=/usr/sbin/policy-rc.d added=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && added=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; } \
    || echo "prometheus: apt-get install failed; its acceptance test is skipped"
  if [ -n "$added" ]; then rm -f "$policy"; fi
  if command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
  return 0
}

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# [dev] brings [demo] (simulators, embedded servers) and [bench] (plotting): the suite uses both.
.venv/bin/python -m pip install --quiet -e ".[dev]"

bash scripts/ensure_services.sh
install_prometheus

.venv/bin/ruff check .
.venv/bin/mypy orchestrator config tasks workers scripts tests
.venv/bin/python -m pytest -q "$@"
