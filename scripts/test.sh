#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite against a real local
# Kafka broker and a real Prometheus. Extra arguments go to pytest (e.g. -k golden).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -q "$@"
