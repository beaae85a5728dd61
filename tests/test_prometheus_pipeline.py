"""The pipeline recording rules in a real Prometheus reproduce the v2 example's expected report.

Why: the rules repeat engine/kpis.py's pipeline, forecast and pacing formulas (SPEC §7.4, §7.5)
in PromQL over gauges summed across workers. Three exporters, each holding some partitions of
``tests/golden/pipeline`` at its ``as_of``, are scraped by Prometheus; every value the rules
record must equal ``expected.json`` (relative tolerance 1e-6), and every ``null`` of the report
must be an absent series. Prometheus has the windows the gauges exist for: the point-in-time
pipeline and the forecast in the offset-0 windows, the stage flows in every window, pacing in
the offset-0 windows.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from engine.calendar import Calendar
from engine.collector import KpiCollector
from engine.config import Config, load_config
from engine.core import Core
from engine.decode import decode
from engine.event import Event
from engine.routing import routes
from engine.timestamps import parse_instant
from prometheus_server import Prometheus

HERE = Path(__file__).parent
EXAMPLE = HERE / "golden" / "pipeline"
RULES = HERE.parent / "prometheus" / "rules" / "kpi_recording.yml"
WORKERS = 3

Key = tuple[str, ...]  # period, offset, scope, team, rep (+ stage, category or kpi)

# Point-in-time pipeline and forecast scalars: offset-0 windows only.
POINT_IN_TIME = ("pipeline_deals", "pipeline_amount", "pipeline_weighted", "pipeline_due_amount",
                 "pipeline_due_weighted", "forecast_commit", "forecast_best_case",
                 "forecast_weighted")
# The report's breakdowns and the label each is broken down by.
BY_STAGE_NOW = ("pipeline_deals_by_stage", "pipeline_amount_by_stage")
FLOWS = ("stage_entries", "avg_days_in_stage")
# The v1 KPIs of every window: the stages must change none of them.
V1_KPIS = (
    "leads_created", "leads_qualified", "lead_qualification_rate", "activities", "deals_created",
    "deals_won", "deals_lost", "revenue_won", "win_rate", "lead_conversion_rate",
    "avg_deal_size", "avg_sales_cycle_days", "sales_velocity", "revenue_growth",
    "revenue_growth_yoy", "active_reps", "revenue_per_rep", "spend_marketing", "spend_sales",
    "spend_total", "new_customers", "cac", "customers_active_start", "customers_active_end",
    "customers_churned", "churn_rate", "retention_rate", "mrr_start", "mrr_end", "mrr_new",
    "mrr_churned", "arpa", "clv",
)
PACING = ("expected", "pace", "projection", "coverage", "forecast_attainment")


@pytest.fixture(scope="module")
def example() -> tuple[Config, int, list[Event]]:
    config = load_config(EXAMPLE / "config.toml")
    as_of = parse_instant((EXAMPLE / "as_of.txt").read_text())
    stages = config.pipeline.stage_ids or None
    events = []
    for line in (EXAMPLE / "events.jsonl").read_bytes().split(b"\n"):
        line = line.rstrip(b"\r")
        if line.strip():
            event = decode(line, currency=config.money.currency,
                           max_event_bytes=config.limits.max_event_bytes, stages=stages)
            assert isinstance(event, Event), event
            events.append(event)
    assert any(e.type == "deal.updated" for e in events)
    return config, as_of, events


def partitioned(config: Config, events: list[Event], n: int) -> list[Core]:
    """``n`` cores fed as the live engine feeds partitions: each aspect by its route key."""
    calendar = Calendar(config.calendar)
    cores = [Core(calendar, config.pipeline) for _ in range(n)]
    for event in events:
        for key, aspect in routes(event):
            cores[zlib.crc32(key.encode()) % n].apply(event, aspect)
    return cores


@pytest.fixture
def exporters(example) -> Iterator[list[str]]:
    """Three HTTP exporters on free loopback ports, each a worker holding two of six
    partitions, with the clock fixed at the example's as_of."""
    config, as_of, events = example
    cores = partitioned(config, events, 2 * WORKERS)
    assert all(core.deals for core in cores)  # every worker holds deals of the pipeline
    servers = []
    try:
        for i in range(WORKERS):
            held = cores[2 * i:2 * i + 2]
            registry = CollectorRegistry()
            KpiCollector(lambda held=held: held, held[0].calendar, config,
                         clock=lambda: as_of, registry=registry)
            servers.append(start_http_server(0, addr="127.0.0.1", registry=registry))
        yield [f"127.0.0.1:{server.server_port}" for server, _ in servers]
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@pytest.fixture
def prometheus(tmp_path: Path, exporters: list[str]) -> Iterator[Prometheus]:
    """Scrapes every 6 s: three exporters share one Python process, a scrape of each takes
    about a second of CPU, and a scrape that times out makes the worker's series stale."""
    with Prometheus(tmp_path, exporters, [RULES], scrape_interval="6s") as server:
        yield server


def _scopes(report: dict) -> Iterator[tuple[Key, dict]]:
    for w in report["windows"]:
        period, offset = w["period"], str(w["offset"])
        yield (period, offset, "company", "", ""), w["company"]
        for team, doc in w["teams"].items():
            yield (period, offset, "team", team, ""), doc
        for rep, doc in w["reps"].items():
            yield (period, offset, "rep", "", rep), doc


def _key(metric: dict, *extra: str) -> Key:
    return (metric["period"], metric["offset"], metric["scope"], metric.get("team", ""),
            metric.get("rep", "")) + tuple(metric.get(label, "") for label in extra)


def expectations(report: dict) -> dict[str, dict[Key, float]]:
    """What each recorded series must be, from the report, for the windows Prometheus has;
    a ``null`` is left out (it must be absent)."""
    want: dict[str, dict[Key, float]] = {}

    def put(name: str, key: Key, value: float | None) -> None:
        series = want.setdefault(name, {})
        if value is not None:
            series[key] = value

    for key, doc in _scopes(report):
        kpis, current = doc["kpis"], key[1] == "0"
        for kpi in V1_KPIS:
            put(f"kpi:{kpi}", key, kpis.get(kpi))
        for kind in FLOWS:
            for stage, value in kpis[kind].items():
                put(f"kpi:{kind}", key + (stage,), value)
        for kpi, target in doc["targets"].items():
            if current or kpi not in POINT_IN_TIME:
                put("kpi:target_attainment", key + (kpi,), target["attainment"])
            if current:
                for field in PACING:
                    put(f"kpi:target_{field}", key + (kpi,), target[field])
        if not current:
            for field in PACING:  # the rules record no pacing outside offset 0
                want.setdefault(f"kpi:target_{field}", {})
            continue
        for kpi in POINT_IN_TIME:
            put(f"kpi:{kpi}", key, kpis[kpi])
        for kind in BY_STAGE_NOW:
            for stage, value in kpis[kind].items():
                put(f"kpi:{kind}", key + (stage,), value)
        for category, value in kpis["pipeline_amount_by_category"].items():
            put("kpi:pipeline_amount_by_category", key + (category,), value)
    return want


EXTRA_LABEL = {"pipeline_deals_by_stage": "stage", "pipeline_amount_by_stage": "stage",
               "stage_entries": "stage", "avg_days_in_stage": "stage",
               "pipeline_amount_by_category": "category"}


def _compare(server: Prometheus, want: dict[str, dict[Key, float]]) -> tuple[list[str], int]:
    problems: list[str] = []
    compared = 0
    for name, expected in want.items():
        short = name[len("kpi:"):]
        extra = ("kpi",) if short.startswith("target_") else (
            (EXTRA_LABEL[short],) if short in EXTRA_LABEL else ())
        got = {_key(r["metric"], *extra): float(r["value"][1]) for r in server.query(name)}
        compared += len(expected)
        for key in sorted(set(got) | set(expected)):
            if key not in expected:
                problems.append(f"{name}{key}: got {got[key]}, expected null/absent")
            elif key not in got:
                problems.append(f"{name}{key}: absent, expected {expected[key]}")
            elif not math.isclose(got[key], expected[key], rel_tol=1e-6, abs_tol=1e-9):
                problems.append(f"{name}{key}: got {got[key]}, expected {expected[key]}")
    return problems, compared


def test_expectations_cover_the_pipeline_and_the_pacing_of_the_example():
    """The comparison below is not vacuous: the example has open deals in every stage, flows,
    nulls and targets with every pacing figure."""
    want = expectations(json.loads((EXAMPLE / "expected.json").read_text()))
    company_month = ("month", "0", "company", "", "")
    assert want["kpi:pipeline_deals"][company_month] > 0
    assert want["kpi:forecast_commit"][company_month] > want["kpi:revenue_won"][company_month]
    assert len(want["kpi:avg_days_in_stage"]) < len(want["kpi:stage_entries"])  # nulls exist
    for field in PACING:
        assert want[f"kpi:target_{field}"], field
    assert {k[1] for k in want["kpi:stage_entries"]} == {"0", "1", "4", "12"}
    assert {k[1] for k in want["kpi:pipeline_deals"]} == {"0"}


@pytest.mark.slow
def test_pipeline_rules_reproduce_the_expected_report(prometheus):
    want = expectations(json.loads((EXAMPLE / "expected.json").read_text()))
    deadline = time.monotonic() + 120
    problems = ["not evaluated yet"]
    compared = 0
    while time.monotonic() < deadline:
        up = prometheus.query('up{job="kpi-engine"} == 1')
        evaluated = prometheus.query("kpi:target_forecast_attainment")
        if len(up) == WORKERS and evaluated:
            # every worker scraped and the rules evaluated after that: the clock is fixed, so
            # the numbers are stable and the comparison passes or shows real differences
            time.sleep(2.5)
            problems, compared = _compare(prometheus, want)
            if not problems:
                break
        time.sleep(0.5)
    assert not problems, "\n".join(problems[:60])
    assert compared > 10_000
    # the pipeline is spread over the workers: each holds part of the company's open amount
    parts = prometheus.query(
        'sum by (instance) (kpi_pipeline_open_amount{period="quarter",scope="company"}) > 0')
    assert len(parts) == WORKERS
