#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the engine on its embedded defaults: a local
# Kafka broker, a worker, generated CRM traffic (a backfill of recent history, then live
# events), Prometheus with the recording rules when installed. Ctrl-C stops everything.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/kpi-engine demo "$@"
