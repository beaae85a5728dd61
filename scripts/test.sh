#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite against a real local
# Kafka broker and a real Prometheus. Extra arguments go to pytest (e.g. -k golden).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
.venv/bin/python -m pytest -q
# The live tests once more against a SASL_SSL-only broker (SCRAM-SHA-512, a run-time CA,
# ACLs enforced; tests/conftest.py, docs/security.md): the engine's numbers must not depend on
# how it reaches Kafka.
KPI_TEST_KAFKA_SECURITY=sasl_ssl exec .venv/bin/python -m pytest -q \
  tests/test_worker_equivalence.py tests/test_dashboards_live.py \
  tests/test_wallboard_browser.py tests/test_ingest_e2e.py
