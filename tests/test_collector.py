"""The Prometheus export: the collector's exposition, its additivity across workers, and the
recording rules evaluated by a real Prometheus against the spec example's expected report."""

from __future__ import annotations

import json
import math
from dataclasses import replace
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from engine.calendar import REPORT_WINDOWS, Calendar
from engine.collector import PREFIX, UNIT_DIVISORS, KpiCollector
from engine.components import UNITS, add_components, components
from engine.config import Config, Target, load_config
from engine.core import Core
from engine.event import MICRO, Event
from engine.routing import routes
from engine.timestamps import parse_instant
from prometheus_server import Prometheus

HERE = Path(__file__).parent
EXAMPLE = HERE / "golden" / "small"
PIPELINE = HERE / "golden" / "pipeline"
RULES = HERE.parent / "prometheus" / "rules" / "kpi_recording.yml"
HOUR_US = 3600 * MICRO

# -- the example, decoded and partitioned ------------------------------------------------------


def _decoder(config: Config):
    try:
        from engine.decode import decode
    except ImportError:  # pragma: no cover - only before engine.decode existed
        return _parse_event
    currency, max_bytes = config.money.currency, config.limits.max_event_bytes
    return lambda raw: decode(raw, currency=currency, max_event_bytes=max_bytes)


def _parse_event(raw: bytes) -> Event:
    """A tiny stand-in for engine.decode on the (valid) example events."""
    d = json.loads(raw)
    event = Event(d["event_id"], d["type"], parse_instant(d["occurred_at"]))
    for name in ("team_id", "rep_id", "lead_id", "deal_id", "customer_id", "subscription_id",
                 "activity_type", "outcome", "category"):
        setattr(event, name, d.get(name))
    for name in ("amount", "mrr"):
        if d.get(name) is not None:
            setattr(event, name, round(d[name] * MICRO))
    if d.get("opened_at") is not None:
        event.opened_at = parse_instant(d["opened_at"])
    return event


@pytest.fixture(scope="module")
def example() -> tuple[Config, int, list[Event]]:
    config = load_config(EXAMPLE / "config.toml")
    as_of = parse_instant((EXAMPLE / "as_of.txt").read_text())
    decode = _decoder(config)
    events = []
    for line in (EXAMPLE / "events.jsonl").read_bytes().split(b"\n"):
        line = line.rstrip(b"\r")
        if line.strip():
            event = decode(line)
            assert isinstance(event, Event), event
            events.append(event)
    return config, as_of, events


def one_core(config: Config, events: list[Event]) -> Core:
    core = Core(config.calendar, config.pipeline)
    for event in events:
        core.apply(event)
    return core


def partitioned(config: Config, events: list[Event], n: int, salt: int = 0) -> list[Core]:
    """``n`` cores fed as the live engine feeds partitions: each aspect by its route key."""
    calendar = Calendar(config.calendar)
    cores = [Core(calendar) for _ in range(n)]
    for event in events:
        for key, aspect in routes(event):
            cores[zlib.crc32(key.encode(), salt) % n].apply(event, aspect)
    return cores


# -- reading the exposition ---------------------------------------------------------------------


def scrape(cores: list[Core], config: Config, as_of: int) -> str:
    registry = CollectorRegistry()
    KpiCollector(lambda: cores, cores[0].calendar, config, clock=lambda: as_of, registry=registry)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, key
            out[key] = s.value
    return out


def component_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """The component gauges only, keyed by component name (without the ``kpi_`` prefix)."""
    return {(name[len(PREFIX):], labels): v for (name, labels), v in samples(text).items()
            if name[len(PREFIX):] in UNITS}


def as_samples(comps: dict) -> dict[tuple[str, frozenset], float]:
    """``components()`` converted to the exported units: what the exposition must say."""
    return {(name, frozenset(labels)): value / UNIT_DIVISORS[UNITS[name]]
            for (name, labels), value in comps.items()}


def as_integers(values: dict[tuple[str, frozenset], float]) -> dict[tuple[str, frozenset], int]:
    """Exported floats back to the components' exact integers (micro-units, µs, counts)."""
    return {key: round(v * UNIT_DIVISORS[UNITS[key[0]]]) for key, v in values.items()}


def key_set(comps: dict) -> dict[tuple[str, frozenset], int]:
    return {(name, frozenset(labels)): v for (name, labels), v in comps.items()}


# -- (a) the exposition is components() in base units ------------------------------------------


def test_exposition_equals_components_in_units(example):
    config, as_of, events = example
    core = one_core(config, events)
    text = scrape([core], config, as_of)
    expected = as_samples(components([core], core.calendar, as_of))
    assert component_samples(text) == expected
    # money in currency units, durations in seconds, counts as they are
    company_month = frozenset({("period", "month"), ("offset", "0"), ("scope", "company"),
                               ("team", ""), ("rep", "")})
    assert expected[("revenue_won", company_month)] == 485950.0
    assert expected[("deals_won", company_month)] == 13


def test_every_component_is_a_gauge_with_its_labels(example):
    config, as_of, events = example
    text = scrape([one_core(config, events)], config, as_of)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert not config.pipeline.stages  # stage flows have a stage label: none without stages
    for name in UNITS:
        if name in ("stage_entries", "stage_stay_seconds_sum", "stage_stays"):
            assert PREFIX + name not in families, name
            continue
        assert PREFIX + name in families, name
        assert not (PREFIX + name).endswith("_total")
    scoped = {"period", "offset", "scope", "team", "rep"}
    assert set(families["kpi_revenue_won"].samples[0].labels) == scoped
    assert set(families["kpi_activities"].samples[0].labels) == scoped | {"activity_type"}
    assert set(families["kpi_spend"].samples[0].labels) == {"period", "offset", "category"}
    assert set(families["kpi_rep_contributions"].samples[0].labels) == {
        "period", "offset", "team", "rep"}
    assert set(families["kpi_mrr_end"].samples[0].labels) == {"period", "offset"}


def test_info_margin_targets_and_window_gauges(example):
    config, as_of, events = example
    core = one_core(config, events)
    values = samples(scrape([core], config, as_of))
    assert values[("kpi_info", frozenset({("timezone", "Europe/London"),
                                          ("currency", "GBP")}))] == 1
    assert values[("kpi_gross_margin", frozenset())] == 0.85
    assert values[("kpi_as_of_timestamp_seconds", frozenset())] == as_of / MICRO
    for period, offset in REPORT_WINDOWS:
        w = core.calendar.window(period, offset, as_of)
        labels = frozenset({("period", period), ("offset", str(offset))})
        assert values[("kpi_window_start_timestamp_seconds", labels)] == w.start / MICRO
        assert values[("kpi_window_end_timestamp_seconds", labels)] == w.end / MICRO
    targets = {dict(labels)["kpi"] + "/" + dict(labels)["period"] + "/" + dict(labels)["scope"]
               + "/" + dict(labels)["team"] + dict(labels)["rep"]: v
               for (name, labels), v in values.items() if name == "kpi_target"}
    assert len(targets) == len(config.targets)
    assert targets["revenue_won/month/company/"] == 370000.0
    assert targets["revenue_won/quarter/team/france"] == 440000.0
    assert targets["win_rate/month/rep/rep-188"] == 0.35
    assert ("kpi_collect_duration_seconds", frozenset()) in values


def test_a_later_duplicate_target_replaces_an_earlier_one(example):
    config, as_of, events = example
    from dataclasses import replace
    config = replace(config, targets=(
        Target("revenue_won", "month", 100.0),
        Target("revenue_won", "month", 5.0, team="dach"),
        Target("revenue_won", "month", 200.0),
    ))
    values = samples(scrape([one_core(config, events)], config, as_of))
    targets = {labels: v for (name, labels), v in values.items() if name == "kpi_target"}
    assert targets == {
        frozenset({("kpi", "revenue_won"), ("period", "month"), ("scope", "company"),
                   ("team", ""), ("rep", "")}): 200.0,
        frozenset({("kpi", "revenue_won"), ("period", "month"), ("scope", "team"),
                   ("team", "dach"), ("rep", "")}): 5.0,
    }


def test_windows_follow_the_wall_clock_without_events(example):
    """Day offset 0 rolls over at local midnight although no event arrives."""
    config, _, events = example
    core = one_core(config, events)
    calendar = core.calendar
    # local midnight starting 2026-10-29 in Europe/London (still BST: 2026-10-28T23:00Z)
    midnight = calendar.midnight(calendar.local_day(parse_instant("2026-10-29T12:00:00Z")))
    before = midnight - HOUR_US
    assert not any(before <= e.ts < midnight for e in events)  # a quiet last hour
    now = [before]
    registry = CollectorRegistry()
    KpiCollector(lambda: [core], calendar, config, clock=lambda: now[0], registry=registry)
    first = samples(generate_latest(registry).decode())
    now[0] = midnight
    second = samples(generate_latest(registry).decode())

    def day(values, offset, name="deals_won"):
        return values[(PREFIX + name, frozenset({
            ("period", "day"), ("offset", str(offset)), ("scope", "company"), ("team", ""),
            ("rep", "")}))]

    window = frozenset({("period", "day"), ("offset", "0")})
    assert second[("kpi_window_start_timestamp_seconds", window)] == midnight / MICRO
    assert second[("kpi_as_of_timestamp_seconds", frozenset())] == midnight / MICRO
    assert day(first, 0) > 0
    for name in ("leads_created", "deals_created", "deals_won", "deals_lost", "revenue_won"):
        assert day(second, 0, name) == 0
        assert day(second, 1, name) == day(first, 0, name)


def test_collector_reads_the_cores_held_at_scrape_time(example):
    """Partitions move: the export is of the cores the provider returns now, never cached."""
    config, as_of, events = example
    cores = partitioned(config, events, 2)
    held = [cores[0]]
    registry = CollectorRegistry()
    KpiCollector(lambda: held, cores[0].calendar, config, clock=lambda: as_of,
                 registry=registry)
    assert component_samples(generate_latest(registry).decode()) == as_samples(
        components([cores[0]], cores[0].calendar, as_of))
    held.append(cores[1])
    assert component_samples(generate_latest(registry).decode()) == as_samples(
        components(cores, cores[0].calendar, as_of))


def test_collector_registers_only_on_the_registry_given(example):
    from prometheus_client import REGISTRY
    config, as_of, events = example
    before = set(REGISTRY._names_to_collectors)
    KpiCollector(lambda: [], Calendar(config.calendar), config, clock=lambda: as_of)
    assert set(REGISTRY._names_to_collectors) == before
    registry = CollectorRegistry()
    KpiCollector(lambda: [], Calendar(config.calendar), config, clock=lambda: as_of,
                 registry=registry)
    with pytest.raises(ValueError):  # the names are described: a second one is a duplicate
        KpiCollector(lambda: [], Calendar(config.calendar), config, registry=registry)


# -- (b) components add up across workers -------------------------------------------------------

OTHER_INSTANTS = ("2026-10-31T23:30:00+00:00", "2026-03-29T01:30:00+00:00",
                  "2025-12-31T23:59:59.999999+00:00")


@pytest.mark.parametrize("as_of_text", [None, *OTHER_INSTANTS])
def test_components_of_partitions_add_up_to_the_whole(example, as_of_text):
    config, as_of, events = example
    if as_of_text is not None:
        as_of = parse_instant(as_of_text)
    whole = one_core(config, events)
    expected = components([whole], whole.calendar, as_of)
    cores = partitioned(config, events, 3)
    summed: dict = {}
    for core in cores:
        add_components(summed, components([core], core.calendar, as_of))
    assert summed == expected
    # the same through the text exposition of each worker, summed as Prometheus sums
    exposed: dict[tuple[str, frozenset], float] = {}
    for core in cores:
        for key, value in component_samples(scrape([core], config, as_of)).items():
            exposed[key] = exposed.get(key, 0.0) + value
    assert as_integers(exposed) == key_set(expected)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(min_value=2, max_value=6),
       salt=st.integers(min_value=0, max_value=2**32 - 1),
       hours_back=st.integers(min_value=0, max_value=24 * 800))
def test_any_partitioning_adds_up_at_any_instant(example, n, salt, hours_back):
    """Any number of partitions, any assignment of route keys, any instant in two years."""
    config, as_of, events = example
    as_of -= hours_back * HOUR_US + salt % HOUR_US
    whole = one_core(config, events)
    expected = components([whole], whole.calendar, as_of)
    summed: dict = {}
    for core in partitioned(config, events, n, salt):
        add_components(summed, components([core], core.calendar, as_of))
    assert summed == expected


# -- (c) a real Prometheus evaluates the recording rules ---------------------------------------

@pytest.fixture
def exporters(example) -> Iterator[list[str]]:
    """Two HTTP exporters on free loopback ports, each a worker holding half the partitions,
    with the clock fixed at the example's as_of."""
    config, as_of, events = example
    cores = partitioned(config, events, 4)
    servers = []
    try:
        for held in (cores[:2], cores[2:]):
            registry = CollectorRegistry()
            KpiCollector(lambda held=held: held, held[0].calendar, config,
                         clock=lambda: as_of, registry=registry)
            server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
            servers.append((server, thread))
        yield [f"127.0.0.1:{server.server_port}" for server, _ in servers]
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@pytest.fixture
def prometheus(tmp_path: Path, exporters: list[str]) -> Iterator[Prometheus]:
    """Prometheus scraping both workers every 3 s: a Python exporter on a busy CI machine can
    take over a second, and a failed scrape would make the workers' series stale."""
    with Prometheus(tmp_path, exporters, [RULES], scrape_interval="3s") as server:
        yield server


# Every numeric KPI of the report; activities_by_type is compared per activity type.
REPORT_KPIS = (
    "leads_created", "leads_qualified", "lead_qualification_rate", "activities", "deals_created",
    "deals_won", "deals_lost", "revenue_won", "win_rate", "lead_conversion_rate",
    "avg_deal_size", "avg_sales_cycle_days", "sales_velocity", "revenue_growth",
    "revenue_growth_yoy", "active_reps", "revenue_per_rep", "spend_marketing", "spend_sales",
    "spend_total", "new_customers", "cac", "customers_active_start", "customers_active_end",
    "customers_churned", "churn_rate", "retention_rate", "mrr_start", "mrr_end", "mrr_new",
    "mrr_churned", "arpa", "clv",
)

Key = tuple[str, str, str, str, str]  # period, offset, scope, team, rep


def _expected_scopes(report: dict) -> Iterator[tuple[Key, dict]]:
    for w in report["windows"]:
        period, offset = w["period"], str(w["offset"])
        yield (period, offset, "company", "", ""), w["company"]
        for team, doc in w["teams"].items():
            yield (period, offset, "team", team, ""), doc
        for rep, doc in w["reps"].items():
            yield (period, offset, "rep", "", rep), doc


def _key(metric: dict) -> Key:
    return (metric["period"], metric["offset"], metric["scope"], metric.get("team", ""),
            metric.get("rep", ""))


def _compare(server: Prometheus, report: dict) -> tuple[list[str], int]:
    """Every recorded KPI against the report: non-null values within 1e-6, nulls absent.

    Returns the differences and how many values were compared.
    """
    problems: list[str] = []
    compared = 0

    def check(name: str, got: dict, want: dict) -> None:
        nonlocal compared
        compared += len(want)
        for key in sorted(set(got) | set(want)):
            if key not in want:
                problems.append(f"{name}{key}: got {got[key]}, expected null/absent")
            elif key not in got:
                problems.append(f"{name}{key}: absent, expected {want[key]}")
            elif not math.isclose(got[key], want[key], rel_tol=1e-6, abs_tol=1e-9):
                problems.append(f"{name}{key}: got {got[key]}, expected {want[key]}")

    for kpi in REPORT_KPIS:
        got = {_key(r["metric"]): float(r["value"][1]) for r in server.query(f"kpi:{kpi}")}
        want = {key: doc["kpis"][kpi] for key, doc in _expected_scopes(report)
                if doc["kpis"].get(kpi) is not None}
        check(f"kpi:{kpi}", got, want)
    got = {_key(r["metric"]) + (r["metric"]["activity_type"],): float(r["value"][1])
           for r in server.query("kpi:activities_by_type")}
    want = {key + (t,): n for key, doc in _expected_scopes(report)
            for t, n in doc["kpis"]["activities_by_type"].items()}
    check("kpi:activities_by_type", got, want)
    got = {_key(r["metric"]) + (r["metric"]["kpi"],): float(r["value"][1])
           for r in server.query("kpi:target_attainment")}
    want = {key + (kpi,): t["attainment"] for key, doc in _expected_scopes(report)
            for kpi, t in doc["targets"].items() if t["attainment"] is not None}
    check("kpi:target_attainment", got, want)
    return problems, compared


@pytest.mark.slow
def test_prometheus_recording_rules_reproduce_the_expected_report(prometheus):
    expected = json.loads((EXAMPLE / "expected.json").read_text())
    deadline = time.monotonic() + 90
    problems = ["not evaluated yet"]
    while time.monotonic() < deadline:
        up = prometheus.query('up{job="kpi-engine"} == 1')
        evaluated = prometheus.query('kpi:leads_created')
        if len(up) == 2 and evaluated:
            # both workers scraped and the rules evaluated after that: the numbers are stable
            # (the clock is fixed), so the comparison either passes or shows real differences
            time.sleep(2.5)
            problems, compared = _compare(prometheus, expected)
            if not problems:
                break
        time.sleep(0.5)
    assert not problems, "\n".join(problems[:60])
    assert compared > 8_000  # every KPI of every window and scope, not a vacuous pass
    # spot checks that the KPIs the brief names are really there, at company scope
    company = '{period="month",offset="0",scope="company"}'
    for kpi in ("win_rate", "avg_deal_size", "lead_conversion_rate", "sales_velocity",
                "revenue_growth", "revenue_growth_yoy", "active_reps", "cac", "churn_rate",
                "clv", "arpa"):
        assert prometheus.query(f"kpi:{kpi}{company}"), kpi
    # both workers contribute: each holds part of the company's revenue
    parts = prometheus.query('kpi_revenue_won{period="year",offset="0",scope="company"} > 0')
    assert len(parts) == 2


def test_direct_exposition_equals_the_registry_exposition(example):
    """``KpiCollector.exposition()`` writes the text itself (fast); it must say exactly what
    ``generate_latest`` says of the same collector, line for line except the timing gauge."""
    config, as_of, events = example
    config = replace(config, pipeline=load_config(PIPELINE / "config.toml").pipeline)
    core = one_core(config, events)
    registry = CollectorRegistry()
    collector = KpiCollector(lambda: [core], core.calendar, config, clock=lambda: as_of,
                             registry=registry)

    def lines(text: bytes) -> list[str]:
        return [line for line in text.decode().splitlines()
                if not line.startswith("kpi_collect_duration_seconds ")]

    direct, reference = lines(collector.exposition()), lines(generate_latest(registry))
    assert direct == reference
    assert sum(1 for line in direct if line.startswith("kpi_pipeline_open_amount{")) > 100


def test_direct_exposition_escapes_label_values():
    from engine.collector import components_text

    text = components_text({("revenue_won", (("period", "month"), ("team", 'a"b\\c\nd'))): 5})
    families = list(text_string_to_metric_families(text.decode()))
    assert families[0].samples[0].labels["team"] == 'a"b\\c\nd'
    assert families[0].samples[0].value == 5e-6
