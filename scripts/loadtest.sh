#!/usr/bin/env bash
# The long run of the load and fault lab: both profiles on seed-10x with every fault.
# Usage: bash scripts/loadtest.sh [MINUTES] [RATE] [OUT] [HOSTS]   (needs: pip install -e ".[bench]")
# Prints both tables; JSON and PNG go to OUT (default loadtest-results/). HOSTS (default 2):
# simulated hosts in network namespaces (as root; otherwise the workers run as processes).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n 2,5p "$0" | sed 's/^# //'
  exit 0
fi
MINUTES="${1:-4}"
RATE="${2:-0.3}"
OUT="${3:-loadtest-results}"
HOSTS="${4:-2}"
exec .venv/bin/orchestrator loadtest seed-10x --profile both --minutes "$MINUTES" \
  --rate "$RATE" --seed 12 --hosts "$HOSTS" --out "$OUT"
