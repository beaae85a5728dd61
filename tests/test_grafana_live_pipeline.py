"""Every dashboard query against a real Prometheus that records the v2 example's KPIs.

Like tests/test_grafana_live.py (same exporter, rules and checks), over
``tests/golden/pipeline``: stages, an open pipeline, stage flows and targets with pacing
(SPEC §7), so the pipeline, forecast, stage and pace panels must show data too. A module of
its own so that its Prometheus does not run beside the v1 example's (module-scoped fixtures
end with their module): two slow exporters scraped at once can miss their scrape timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import prometheus_server
from prometheus_server import Prometheus
from test_grafana_live import ALLOWED_EMPTY, DASHBOARD_FILES, _check_every_panel, _serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "golden" / "pipeline"
REP = "rep-033"  # has month targets for revenue_won and win_rate in the example's config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(prometheus_server.BINARY is None, reason=prometheus_server.NOT_INSTALLED),
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    # The v2 example's components (stages, pipelines for every window) take longer to compute.
    yield from _serve(EXAMPLE, tmp_path_factory, scrape_interval="10s")


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_panel_shows_data_for_the_pipeline_example(prometheus: Prometheus, name: str):
    """Every panel, the pipeline, forecast, stage and pace panels included, has data for
    some choice of period."""
    _check_every_panel(prometheus, name, REP, ALLOWED_EMPTY)
