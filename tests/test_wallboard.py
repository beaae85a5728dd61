"""The wallboard without a browser or Kafka: the page route, the packaged assets, ``/api/live``
over a hand-built core, the freshness clock and the Prometheus gauges for multi-worker mode.

The routes run on the real Faust app's aiohttp application (``create_app`` + the real
registration), driven by aiohttp's test client; only the cores are built by hand.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatch
from pathlib import Path

import orjson
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.calendar import Calendar, to_micros
from engine.config import (
    CalendarConfig,
    Config,
    MoneyConfig,
    PeopleConfig,
    TopicsConfig,
    WorkerConfig,
)
from engine.core import Core
from engine.event import MICRO, Event
from engine.security.audience import EVERYTHING, Grant, filter_live
from streams.app import create_app
from streams.metrics import WorkerMetrics
from streams.wallboard import (
    ASSETS,
    PROMETHEUS_URL_ENV,
    Freshness,
    WallboardCollector,
    asset_text,
    latest_event_instant,
    page_settings,
    recent_activities,
    register_wallboard,
)

ROOT = Path(__file__).resolve().parent.parent
ZONE = "Europe/Berlin"
# 00:20 local time: the last hour reaches back into the previous local day.
AS_OF = datetime(2026, 3, 10, 23, 20, tzinfo=timezone.utc)


def us(dt: datetime) -> int:
    return to_micros(dt)


def config(tmp_path: Path, partitions: int = 2) -> Config:
    return replace(
        Config(),
        calendar=CalendarConfig(timezone=ZONE),
        money=MoneyConfig(currency="EUR"),
        topics=TopicsConfig(partitions=partitions),
        worker=WorkerConfig(store="memory://", data_dir=str(tmp_path / "data")),
    )


def activity(n: int, minutes_before: float, kind: str, team: str = "dach",
             rep: str = "r1") -> Event:
    ts = us(AS_OF - timedelta(minutes=minutes_before))
    return Event(event_id=f"a{n}", type="activity.logged", ts=ts, team_id=team, rep_id=rep,
                 activity_type=kind)


def hand_built_cores(cfg: Config) -> list[Core]:
    """Two partitions' cores with activities inside and outside the last hour."""
    first, second = Core(cfg.calendar), Core(cfg.calendar)
    inside = [
        activity(1, 59.5, "call"),                       # 23:20:30 local, yesterday
        activity(2, 30, "call", rep="r2"),
        activity(3, 19.9, "email"),                      # just after local midnight
        activity(4, 0.01, "demo", team="nordics", rep="r9"),
    ]
    outside = [
        activity(5, 60.5, "call"),                       # before the hour
        activity(6, 0, "meeting"),                       # at as_of: not visible
        activity(7, -2, "other"),                        # in the future of as_of
    ]
    for i, event in enumerate(inside + outside):
        (first if i % 2 else second).apply(event)
    # Other events in the hour do not count as activities.
    first.apply(Event(event_id="l1", type="lead.created", ts=us(AS_OF - timedelta(minutes=5)),
                      team_id="dach", rep_id="r1", lead_id="L1"))
    second.apply(Event(event_id="s1", type="spend.recorded", ts=us(AS_OF - timedelta(minutes=5)),
                       amount=100 * MICRO, category="marketing"))
    return [first, second]


class FakeCores:
    """What ``register_wallboard`` reads of :class:`streams.tables.PartitionCores`."""

    def __init__(self, cores: list[Core], ready: bool = True) -> None:
        self.cores = cores
        self.ready = ready

    def active_cores(self) -> list[Core]:
        return self.cores

    def partitions(self) -> list[int]:
        return list(range(len(self.cores)))


def serve(cfg: Config, cores, metrics: WorkerMetrics | None = None, environ=None):
    """Run ``check(client)`` against the real Faust web app with the wallboard registered."""
    app = create_app(cfg)
    metrics = metrics or WorkerMetrics()
    register_wallboard(app, cfg, cores, metrics, environ=environ or {})

    def run(check):
        async def main():
            async with TestClient(TestServer(app.web.web_app)) as client:
                return await check(client)
        return asyncio.run(main())

    return run


# -- the page and its assets ----------------------------------------------------------------------

def test_wallboard_route_serves_one_self_contained_html_page(tmp_path) -> None:
    cfg = config(tmp_path)
    run = serve(cfg, FakeCores(hand_built_cores(cfg)))

    async def check(client):
        pages = []
        for path in ("/wallboard", "/wallboard/"):
            response = await client.get(path)
            assert response.status == 200
            assert response.content_type == "text/html"
            assert response.charset == "utf-8"
            assert response.headers["Cache-Control"] == "no-cache"
            pages.append(await response.text())
        return pages

    html, html_slash = run(check)
    assert html == html_slash
    assert html.startswith("<!DOCTYPE html>")
    # CSS and JS are inlined: nothing to fetch, no CDN, works without internet.
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+stylesheet", html)
    assert asset_text("wallboard.js").strip()[:40] in html
    assert "--bg:" in html
    assert '"source": "worker"' in html and '"partitions_total": 2' in html
    for kpi in ("day.revenue_won", "month.revenue_won", "day.deals_won", "month.leads_qualified",
                "day.activities", "month.win_rate", "month.lead_conversion_rate",
                "live.total", "freshness.seconds"):
        assert f'data-kpi="{kpi}"' in html, kpi


def test_prometheus_url_from_the_environment_makes_prometheus_the_default_source() -> None:
    cfg = Config()
    assert page_settings(cfg, {})["source"] == "worker"
    settings = page_settings(cfg, {PROMETHEUS_URL_ENV: "http://prom:9090"})
    assert settings == {"source": "prometheus", "prometheus_url": "http://prom:9090",
                        "partitions_total": cfg.topics.partitions}


def test_wallboard_assets_are_package_data() -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dist = apply_configuration(Distribution({"script_name": "setup.py"}),
                                   ROOT / "pyproject.toml")
        build_py = dist.get_command_obj("build_py")
        build_py.ensure_finalized()
        shipped = {f for package, _src, _build, files in build_py.data_files
                   if package == "engine" for f in files}
    on_disk = {f"wallboard/{p.name}" for p in (ROOT / "engine" / "wallboard").iterdir()
               if p.is_file()}
    assert {f"wallboard/{name}" for name in ASSETS} <= on_disk
    assert on_disk <= shipped
    assert all(any(fnmatch(f, g) for g in dist.package_data["engine"]) for f in on_disk)
    for name in ASSETS:
        assert asset_text(name).strip()


# -- /api/live ---------------------------------------------------------------------------------------

def test_recent_activities_count_by_type_and_minute_across_local_midnight(tmp_path) -> None:
    cfg = config(tmp_path)
    cores = hand_built_cores(cfg)
    calendar = Calendar(cfg.calendar)
    hi = us(AS_OF)
    lo = hi - 3600 * MICRO
    by_type, per_minute = recent_activities(cores, calendar, lo, hi)
    assert by_type == {"call": 2, "email": 1, "meeting": 0, "demo": 1, "other": 0}
    assert len(per_minute) == 60 and sum(per_minute) == 4
    assert per_minute[0] == 1 and per_minute[30] == 1 and per_minute[40] == 1
    assert per_minute[59] == 1
    dach, _ = recent_activities(cores, calendar, lo, hi, team="dach")
    assert dach == {"call": 2, "email": 1, "meeting": 0, "demo": 0, "other": 0}


def test_api_live_returns_last_hour_counts_freshness_and_team_members(tmp_path) -> None:
    cfg = config(tmp_path)
    cores = hand_built_cores(cfg)
    metrics = WorkerMetrics()
    run = serve(cfg, FakeCores(cores), metrics)
    as_of = AS_OF.isoformat()

    async def check(client):
        bodies = {}
        for name, query in (("all", {"as_of": as_of}),
                            ("dach", {"as_of": as_of, "team": "dach"}),
                            ("short", {"as_of": as_of, "minutes": "25"})):
            response = await client.get("/api/live", params=query)
            assert response.status == 200, await response.text()
            assert response.content_type == "application/json"
            bodies[name] = orjson.loads(await response.read())
        return bodies

    bodies = run(check)
    body = bodies["all"]
    assert body["activities"]["by_type"] == {"call": 2, "email": 1, "meeting": 0, "demo": 1,
                                             "other": 0}
    assert body["activities"]["total"] == 4
    assert body["minutes"] == 60 and body["team"] is None
    assert body["as_of"] == AS_OF.isoformat()
    assert body["from"] == (AS_OF - timedelta(hours=1)).isoformat()
    assert body["timezone"] == ZONE and body["currency"] == "EUR"
    assert body["partitions"] == [0, 1] and body["partitions_total"] == 2
    # The latest event not in the future of the wall clock: as_of + 2 min is long past.
    assert body["last_event_at"] == (AS_OF + timedelta(minutes=2)).isoformat()
    assert body["last_counted_at"] is None  # nothing counted since this process started
    assert body["seconds_since_last_event"] > 0
    assert body["reps_by_team"] == {"dach": ["r1", "r2"], "nordics": ["r9"]}
    assert bodies["dach"]["activities"]["by_type"]["demo"] == 0
    assert bodies["dach"]["activities"]["total"] == 3
    assert bodies["short"]["activities"]["by_type"] == {"call": 0, "email": 1, "meeting": 0,
                                                       "demo": 1, "other": 0}


def test_api_live_refuses_bad_parameters_and_answers_503_while_rebuilding(tmp_path) -> None:
    cfg = config(tmp_path)

    async def check(client):
        statuses = []
        for query in ({"minutes": "0"}, {"minutes": "abc"}, {"minutes": "1441"},
                      {"as_of": "2026-01-01T00:00:00"}):
            response = await client.get("/api/live", params=query)
            statuses.append((response.status, "error" in orjson.loads(await response.read())))
        return statuses

    assert serve(cfg, FakeCores([]))(check) == [(400, True)] * 4

    async def not_ready(client):
        response = await client.get("/api/live")
        return response.status

    assert serve(cfg, FakeCores([], ready=False))(not_ready) == 503


def test_latest_event_skips_future_stamps(tmp_path) -> None:
    cfg = config(tmp_path)
    cores = hand_built_cores(cfg)
    calendar = Calendar(cfg.calendar)
    assert latest_event_instant(cores, calendar, us(AS_OF)) == us(AS_OF)
    assert latest_event_instant(cores, calendar, us(AS_OF) - 1) == \
        us(AS_OF - timedelta(minutes=0.01))
    assert latest_event_instant([], calendar, us(AS_OF)) is None


def test_freshness_marks_the_wall_clock_when_the_counted_total_moves() -> None:
    counted = [5]
    clock = [1_000]
    freshness = Freshness(lambda: counted[0], clock=lambda: clock[0])
    assert freshness.sample() is None  # counted before this process: time unknown
    clock[0] = 2_000
    counted[0] = 6
    assert freshness.sample() == 2_000
    clock[0] = 3_000
    assert freshness.sample() == 2_000  # nothing new


def test_prometheus_gauges_for_multi_worker_mode(tmp_path) -> None:
    cfg = config(tmp_path)
    cores = hand_built_cores(cfg)
    metrics = WorkerMetrics()
    freshness = Freshness(lambda: metrics.totals["counted"], clock=lambda: us(AS_OF))
    collector = WallboardCollector(lambda: cores, lambda: True, Calendar(cfg.calendar),
                                   freshness, clock=lambda: us(AS_OF))
    metrics.registry.register(collector)
    metrics.count_applied({"activity.logged": 1}, {})

    samples = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("kpi_last_counted_timestamp_seconds", ())] == us(AS_OF) / MICRO
    assert samples[("kpi_last_event_timestamp_seconds", ())] == us(AS_OF) / MICRO
    hour = {(dict(labels)["team"], dict(labels)["activity_type"]): v
            for (name, labels), v in samples.items() if name == "kpi_activities_last_hour"}
    assert hour[("dach", "call")] == 2 and hour[("dach", "email")] == 1
    assert hour[("nordics", "demo")] == 1
    assert sum(hour.values()) == 4
    assert len(hour) == 10  # every team x every type, zeros included

    collector.ready = lambda: False  # while rebuilding: no state-derived series
    text = generate_latest(metrics.registry).decode()
    assert "kpi_activities_last_hour{" not in text
    assert "kpi_last_event_timestamp_seconds " not in text


# -- display names from the roster -----------------------------------------------------------

ROSTER = """
[teams]
dach = "DACH Enterprise"
nordics = "Nordics"

[[people]]
rep_id = "r1"
team_id = "dach"
name = "Anna Schmidt"
crm = { pipedrive = "18487521" }

[[people]]  # a name only: no CRM ids (a worker fed from files)
rep_id = "r9"
team_id = "nordics"
name = "Søren Ødegaard"
"""


def named_config(tmp_path: Path) -> Config:
    roster = tmp_path / "roster.toml"
    roster.write_text(ROSTER, encoding="utf-8")
    return replace(config(tmp_path), people=PeopleConfig(roster=str(roster)))


def test_api_live_names_the_rosters_reps_and_teams_and_the_worker_exports_them(tmp_path) -> None:
    cfg = named_config(tmp_path)
    metrics = WorkerMetrics()
    run = serve(cfg, FakeCores(hand_built_cores(cfg)), metrics)

    async def check(client):
        response = await client.get("/api/live", params={"as_of": AS_OF.isoformat()})
        assert response.status == 200, await response.text()
        return orjson.loads(await response.read())

    body = run(check)
    # r2 works for dach but is not in the roster: no name, so the page shows its id.
    assert body["reps_by_team"] == {"dach": ["r1", "r2"], "nordics": ["r9"]}
    assert body["names"] == {"reps": {"r1": "Anna Schmidt", "r9": "Søren Ødegaard"},
                             "teams": {"dach": "DACH Enterprise", "nordics": "Nordics"}}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(
                   generate_latest(metrics.registry).decode())
               for s in family.samples if s.name in ("kpi_rep_info", "kpi_team_info")}
    assert samples == {
        ("kpi_rep_info", (("rep", "r1"), ("rep_name", "Anna Schmidt"), ("team", "dach"))): 1.0,
        ("kpi_rep_info", (("rep", "r9"), ("rep_name", "Søren Ødegaard"),
                          ("team", "nordics"))): 1.0,
        ("kpi_team_info", (("team", "dach"), ("team_name", "DACH Enterprise"))): 1.0,
        ("kpi_team_info", (("team", "nordics"), ("team_name", "Nordics"))): 1.0}


def test_without_a_roster_api_live_has_no_names_and_no_info_series(tmp_path) -> None:
    cfg = config(tmp_path)
    metrics = WorkerMetrics()
    run = serve(cfg, FakeCores(hand_built_cores(cfg)), metrics)

    async def check(client):
        response = await client.get("/api/live", params={"as_of": AS_OF.isoformat()})
        return orjson.loads(await response.read())

    assert run(check)["names"] == {"reps": {}, "teams": {}}
    assert "kpi_rep_info{" not in generate_latest(metrics.registry).decode()


def test_a_scoped_token_sees_only_the_names_of_its_teams_and_reps() -> None:
    document = {"reps_by_team": {"dach": ["r1", "r2"], "nordics": ["r9"]},
                "names": {"reps": {"r1": "Anna Schmidt", "r9": "Søren Ødegaard"},
                          "teams": {"dach": "DACH Enterprise", "nordics": "Nordics"}}}
    membership = {"r1": frozenset({"dach"}), "r2": frozenset({"dach"}),
                  "r9": frozenset({"nordics"})}
    manager = filter_live(document, Grant("manager", teams=frozenset({"nordics"})), membership,
                          "none")
    assert manager["names"] == {"reps": {"r9": "Søren Ødegaard"}, "teams": {"nordics": "Nordics"}}
    rep = filter_live(document, Grant("rep", rep="r1"), membership, "none")
    assert rep["names"] == {"reps": {"r1": "Anna Schmidt"}, "teams": {"dach": "DACH Enterprise"}}
    assert filter_live(document, EVERYTHING, membership, "none") is document
