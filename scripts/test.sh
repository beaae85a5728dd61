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
# The whole suite; tests that fail are run once more, and the run fails if they fail again.
# The second chance is a safety net for live tests on a loaded 2-core machine; it is announced
# loudly, so that a flaky test is seen, not hidden. The intermittent faults it was added for
# (a restart after kill -9 that never read the rest, a lagging replica answering as current)
# are fixed: docs/reliability.md.
run_suite() {
  .venv/bin/python -m pytest -q "$@" && return 0
  echo "[test] FAILURES ABOVE: running the failed tests once more (docs/reliability.md)" >&2
  .venv/bin/python -m pytest -q --last-failed --last-failed-no-failures none "$@"
}
run_suite
# The live tests once more, locked down as a deployment on a shared network is: against a
# SASL_SSL-only broker (SCRAM-SHA-512, a run-time CA, ACLs enforced; tests/conftest.py) and
# with the workers' web endpoints behind tokens of every audience and HTTPS (Prometheus
# scrapes with the metrics token, the wallboard opens through its kiosk link;
# tests/web_access.py, docs/security.md): the engine's numbers must not depend on how it is
# reached, and each test checks that the worker really refused requests without a token.
KPI_TEST_KAFKA_SECURITY=sasl_ssl KPI_TEST_WEB_SECURITY=tokens_tls run_suite \
  tests/test_worker_equivalence.py tests/test_dashboards_live.py \
  tests/test_wallboard_browser.py tests/test_ingest_e2e.py tests/test_worker_faults.py
