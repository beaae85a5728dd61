"""The live wallboard: ``GET /wallboard`` (one static page) and ``GET /api/live`` (its feed).

Why on the worker: a wallboard should need nothing but a browser pointed at a URL — no build step,
no CDN, no login form (a kiosk link carries its token, docs/security.md). The page
(``engine/wallboard/``: ``index.html`` with its sibling CSS and JS, inlined into one response here)
polls ``/api/kpis`` for the numbers and ``/api/live`` for what the report's calendar windows cannot
say: activity in the last N minutes and how fresh the data is. In a multi-worker deployment each
worker holds only some partitions, so the page can read the global numbers from Prometheus' HTTP
API instead (``?source=prometheus&prom=URL``, or ``KPI_WALLBOARD_PROMETHEUS_URL`` set for the
worker). For that mode this module also exports the last-hour activity and freshness as gauges,
which Prometheus sums or maxes over workers.

Freshness: ``last_event_at`` is the latest ``occurred_at`` (not in the future) of any counted
event in this worker's state; ``last_counted_at`` is the wall-clock time at which this worker
last counted a new event, sampled once a second from the worker's counters (unknown until the
first new event after a start). The page calls the data stale when the newer of the two is
older than its ``stale`` parameter.

Names: the page shows the roster's display names (``[people] roster``, :mod:`engine.people`)
instead of rep and team ids, and the id where the roster has no entry. ``/api/live`` carries
them (``names``, cut to what the caller's token may see); in Prometheus mode the page reads
``kpi_rep_info``/``kpi_team_info``, which this module registers once per worker. The report
(``/api/kpis``, SPEC §5) stays ids only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from datetime import timezone
from importlib import resources
from typing import Any

import faust
import orjson
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from engine.calendar import Calendar, from_micros
from engine.config import Config, is_loopback
from engine.core import Core
from engine.event import ACTIVITY_TYPES, MICRO
from engine.measures import ACTIVITY_INDEX
from engine.people.metrics import RosterCollector
from engine.people.roster import Roster, roster_of
from engine.security.audience import filter_live, may_see_team
from engine.security.membership import rep_teams
from engine.timestamps import now_micros, parse_as_of
from engine.view import View
from streams.access import grant_of
from streams.answers import Busy, SharedAnswers

JSON = "application/json"
PROMETHEUS_URL_ENV = "KPI_WALLBOARD_PROMETHEUS_URL"
ASSETS = ("index.html", "wallboard.css", "wallboard.js")
DEFAULT_MINUTES = 60
MAX_MINUTES = 24 * 60
#: How often the worker's counters are sampled for ``last_counted_at``.
FRESHNESS_SAMPLE_SECONDS = 1.0

_ACTIVITY_OF_INDEX = {index: name for name, index in ACTIVITY_INDEX.items()}
_MINUTE_US = 60 * MICRO


# -- questions over the cores (pure) -------------------------------------------------------------

def _activities(cores: Iterable[Core], calendar: Calendar, lo: int,
                hi: int) -> Iterator[tuple[int, str | None, str, int]]:
    """``(occurred_at, team, activity type, count)`` of activities with ``lo ≤ occurred_at < hi``.

    Read from the day buckets' contributions (activities are fixed contributions, never
    retracted), so it needs no change to the core and costs one pass over at most a few days.
    """
    if hi <= lo:
        return
    first, last = calendar.local_day(lo), calendar.local_day(hi - 1)
    for core in cores:
        for day in range(first, last + 1):
            bucket = core.days.get(day)
            if bucket is None:
                continue
            for c in bucket.contributions():
                if not lo <= c.ts < hi:
                    continue
                for index, amount in c.values:
                    name = _ACTIVITY_OF_INDEX.get(index)
                    if name is not None:
                        yield c.ts, c.team, name, amount


def recent_activities(cores: Iterable[Core], calendar: Calendar, lo: int, hi: int,
                      team: str | None = None) -> tuple[dict[str, int], list[int]]:
    """Activities with ``lo ≤ occurred_at < hi`` (µs): counts by type, and per minute from ``lo``."""
    by_type = dict.fromkeys(ACTIVITY_TYPES, 0)
    per_minute = [0] * max(0, -(-(hi - lo) // _MINUTE_US))
    for ts, their_team, name, amount in _activities(cores, calendar, lo, hi):
        if team is None or their_team == team:
            by_type[name] += amount
            per_minute[(ts - lo) // _MINUTE_US] += amount
    return by_type, per_minute


def activities_by_team(cores: Iterable[Core], calendar: Calendar, lo: int,
                       hi: int) -> dict[str, dict[str, int]]:
    """Activities with ``lo ≤ occurred_at < hi`` by team and type, in one pass (the gauges)."""
    teams: dict[str, dict[str, int]] = {}
    for _, team, name, amount in _activities(cores, calendar, lo, hi):
        if team is not None:
            by_type = teams.get(team)
            if by_type is None:
                by_type = teams[team] = dict.fromkeys(ACTIVITY_TYPES, 0)
            by_type[name] += amount
    return teams


def latest_event_instant(cores: Iterable[Core], calendar: Calendar, now: int) -> int | None:
    """The latest ``occurred_at`` ≤ ``now`` of any counted event (future-stamped ones skipped)."""
    latest: int | None = None
    today = calendar.local_day(now)
    for core in cores:
        for day in sorted((d for d in core.event_ts if d <= today), reverse=True):
            stamps = core.event_ts[day]
            candidate = max(stamps, default=None)
            if candidate is not None and candidate > now:  # rare: future-stamped events
                candidate = max((ts for ts in stamps if ts <= now), default=None)
            if candidate is not None:
                if latest is None or candidate > latest:
                    latest = candidate
                break
    return latest


def reps_by_team(view: View, lo: int, hi: int) -> dict[str, list[str]]:
    """Reps with a rep-activating contribution for each team in ``[lo, hi)`` (SPEC §6.9)."""
    teams: dict[str, set[str]] = {}
    for (team, rep), n in view.flows(lo, hi).pairs.items():
        if n > 0 and team is not None:
            teams.setdefault(team, set()).add(rep)
    return {team: sorted(reps) for team, reps in sorted(teams.items())}


# -- freshness of this worker ---------------------------------------------------------------------

class Freshness:
    """Wall-clock time at which this worker last counted a new event (sampled, µs)."""

    def __init__(self, counted: Callable[[], int], clock: Callable[[], int] = now_micros) -> None:
        self._counted = counted
        self._clock = clock
        self._seen = counted()
        self.last_counted_at: int | None = None

    def sample(self) -> int | None:
        n = self._counted()
        if n != self._seen:
            self._seen = n
            self.last_counted_at = self._clock()
        return self.last_counted_at


def _iso(us: int | None) -> str | None:
    return None if us is None else from_micros(us, timezone.utc).isoformat()


def roster_names(roster: Roster) -> dict[str, dict[str, str]]:
    """The ``names`` block of ``/api/live``: rep id -> display name, team id -> display name."""
    return {"reps": roster.rep_names(), "teams": dict(sorted(roster.team_names.items()))}


def live_document(cores: list[Core], calendar: Calendar, config: Config, as_of: int, now: int,
                  minutes: int, team: str | None, last_counted_at: int | None,
                  partitions: list[int], names: dict[str, dict[str, str]] | None = None) -> dict:
    """The ``/api/live`` body: activity in ``[as_of − minutes, as_of)`` and freshness at ``now``."""
    lo = as_of - minutes * _MINUTE_US
    by_type, per_minute = recent_activities(cores, calendar, lo, as_of, team)
    last_event_at = latest_event_instant(cores, calendar, now)
    newest = max((t for t in (last_event_at, last_counted_at) if t is not None), default=None)
    month = calendar.window("month", 0, as_of)
    return {
        "as_of": _iso(as_of),
        "now": _iso(now),
        "timezone": config.calendar.timezone,
        "currency": config.money.currency,
        "minutes": minutes,
        "from": _iso(lo),
        "team": team,
        "activities": {"total": sum(by_type.values()), "by_type": by_type,
                       "per_minute": per_minute},
        "last_event_at": _iso(last_event_at),
        "last_counted_at": _iso(last_counted_at),
        "seconds_since_last_event": None if newest is None else max(0.0, (now - newest) / MICRO),
        "reps_by_team": reps_by_team(View(cores, calendar, as_of), month.start, as_of),
        "partitions": partitions,
        "partitions_total": config.topics.partitions,
        "names": names if names is not None else {"reps": {}, "teams": {}},
    }


# -- Prometheus (multi-worker mode) ---------------------------------------------------------------

class WallboardCollector(Collector):
    """Last-hour activity and freshness of this worker, for the page's Prometheus mode.

    ``kpi_activities_last_hour`` sums exactly over workers (activities are partitioned), the
    timestamps are maxed. Like the KPI gauges, state-derived series are exported only when ready.
    """

    def __init__(self, cores: Callable[[], list[Core]], ready: Callable[[], bool],
                 calendar: Calendar, freshness: Freshness,
                 clock: Callable[[], int] = now_micros) -> None:
        self.cores = cores
        self.ready = ready
        self.calendar = calendar
        self.freshness = freshness
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        counted_at = self.freshness.sample()
        if counted_at is not None:
            yield GaugeMetricFamily(
                "kpi_last_counted_timestamp_seconds",
                "Wall-clock time at which this worker last counted a new event (absent until "
                "the first one after a start).", value=counted_at / MICRO)
        if not self.ready():
            return
        now = self.clock()
        cores = self.cores()
        latest = latest_event_instant(cores, self.calendar, now)
        if latest is not None:
            yield GaugeMetricFamily(
                "kpi_last_event_timestamp_seconds",
                "Latest occurred_at (not in the future) of any counted event this worker holds.",
                value=latest / MICRO)
        activities = GaugeMetricFamily(
            "kpi_activities_last_hour",
            "Activities with occurred_at in the last hour (event time), per team and type.",
            labels=["team", "activity_type"])
        counts = activities_by_team(cores, self.calendar, now - 60 * _MINUTE_US, now)
        zeros = dict.fromkeys(ACTIVITY_TYPES, 0)
        for team in sorted({team for core in cores for team in core.team_first}):
            for name, n in counts.get(team, zeros).items():
                activities.add_metric([team, name], n)
        yield activities


# -- the page ---------------------------------------------------------------------------------------

def asset_text(name: str) -> str:
    """One of the packaged page files (``engine/wallboard/``)."""
    return resources.files("engine").joinpath("wallboard", name).read_text(encoding="utf-8")


def page_html(settings: dict[str, Any]) -> str:
    """``index.html`` with its CSS, JS and the server-side settings inlined: one response."""
    html = asset_text("index.html")
    css = asset_text("wallboard.css")
    js = asset_text("wallboard.js")
    settings_json = json.dumps(settings).replace("</", "<\\/")
    html = html.replace('<link rel="stylesheet" href="wallboard.css">', f"<style>\n{css}</style>")
    html = html.replace('<script src="wallboard.js"></script>', f"<script>\n{js}</script>")
    return html.replace('<script id="wallboard-settings" type="application/json">{}</script>',
                        f'<script id="wallboard-settings" type="application/json">'
                        f'{settings_json}</script>')


def page_csp(html: str, prometheus_url: str | None, loopback: bool = False) -> str:
    """The page's Content-Security-Policy: its own inline script (by hash) and nothing else.

    The page may fetch from its own origin and, in Prometheus mode, only from the Prometheus
    the server was configured with (``PROMETHEUS_URL_ENV``): a ``prom=`` query parameter
    pointing elsewhere is blocked by the browser, so a crafted link cannot send the page's
    requests (and its token) to another host. A worker bound to loopback (``loopback``) is
    viewed from its own machine, whose loopback Prometheus instances are allowed too.
    """
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts)
    connect = "'self'"
    if prometheus_url:
        parts = urllib.parse.urlsplit(prometheus_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            connect += f" {parts.scheme}://{parts.netloc}"
    if loopback:
        connect += " http://127.0.0.1:* http://localhost:*"
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
            f"img-src 'self' data:; connect-src {connect}; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def page_settings(config: Config, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """What the page cannot learn from the APIs: the default source (``PROMETHEUS_URL_ENV``)."""
    env = os.environ if environ is None else environ
    prometheus_url = env.get(PROMETHEUS_URL_ENV, "").strip() or None
    return {"source": "prometheus" if prometheus_url else "worker",
            "prometheus_url": prometheus_url,
            "partitions_total": config.topics.partitions}


def _query_int(request: faust.web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be {lo}..{hi}, got {value}")
    return value


def register_wallboard(app: faust.App, config: Config, cores: Any, metrics: Any,
                       environ: dict[str, str] | None = None,
                       answer: Any = None, answers: SharedAnswers | None = None) -> Freshness:
    """Attach ``/wallboard``, ``/api/live``, the freshness sampler and the collector to ``app``.

    ``cores`` is a :class:`streams.tables.PartitionCores` (``ready``, ``active_cores()``,
    ``partitions()``); ``metrics`` a :class:`streams.metrics.WorkerMetrics` (its ``registry``
    and ``totals``). The roster (``[people] roster``) is read here, once per worker: its names
    go into ``/api/live`` and ``kpi_rep_info``/``kpi_team_info``. ``answers`` shares the live
    documents between requests (:mod:`streams.answers`; the views' instance, so that one share
    of the event loop covers every endpoint).
    """
    if answers is None:
        answers = SharedAnswers()
    calendar = Calendar(config.calendar)
    roster = roster_of(config)
    names = roster_names(roster)
    metrics.registry.register(RosterCollector(roster))
    freshness = Freshness(lambda: metrics.totals["counted"])
    html = page_html(page_settings(config, environ))
    metrics.registry.register(WallboardCollector(
        cores.active_cores, lambda: cores.ready, calendar, freshness))

    @app.timer(interval=FRESHNESS_SAMPLE_SECONDS, name="kpi-wallboard-freshness")
    async def sample_freshness() -> None:
        freshness.sample()

    csp = page_csp(html, page_settings(config, environ)["prometheus_url"],
                   loopback=is_loopback(config.worker.web_host))

    async def wallboard(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """The wallboard page (query parameters are read by the page itself)."""
        return view.html(html, headers={"Cache-Control": "no-cache",
                                        "Content-Security-Policy": csp})

    app.page("/wallboard", name="kpi-wallboard")(wallboard)
    app.page("/wallboard/", name="kpi-wallboard-slash")(wallboard)

    @app.page("/api/live", name="kpi-live")
    async def live(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Activity in the last ``minutes`` (default 60) by type, for ``team``; freshness."""
        now = now_micros()
        try:
            minutes = _query_int(request, "minutes", DEFAULT_MINUTES, 1, MAX_MINUTES)
            text = request.query.get("as_of")
            as_of = now if text is None or not text.strip() else parse_as_of(text)
        except ValueError as exc:
            return view.bytes(orjson.dumps({"error": str(exc)}), content_type=JSON, status=400)
        if answer is not None:  # this worker's shards and its replicas (streams.replicas)
            served, _missing = answer()
            shard_cores = [shard.core for _, shard in served]
            partitions = [p for p, _ in served]
        else:
            shard_cores, partitions = (cores.active_cores(), cores.partitions()) \
                if cores.ready else ([], [])
        if not partitions:
            return view.bytes(orjson.dumps({"error": "not ready: KPI state is being rebuilt"}),
                              content_type=JSON, status=503)
        team = (request.query.get("team") or "").strip() or None
        grant = grant_of(request)
        membership = {} if grant.everything else rep_teams(shard_cores, calendar, as_of)
        if team is not None and not may_see_team(grant, team, membership):
            return view.bytes(orjson.dumps({"error": f"team {team!r} is outside the "
                                                      f"{grant.audience} token's scope"}),
                              content_type=JSON, status=403)
        key = (getattr(cores, "epoch", 0), tuple(partitions), minutes, team,
               None if text is None or not text.strip() else as_of)
        last_counted_at = freshness.sample()
        try:
            body = await answers.get("live", key, lambda: orjson.dumps(live_document(
                shard_cores, calendar, config, as_of, now, minutes, team, last_counted_at,
                partitions, names)))
        except Busy as exc:
            return view.bytes(orjson.dumps({"error": str(exc)}), content_type=JSON, status=503,
                              headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
        if not grant.everything:
            body = orjson.dumps(filter_live(orjson.loads(body), grant, membership,
                                            config.auth.rep_leaderboard))
        return view.bytes(body, content_type=JSON, headers={"Cache-Control": "no-cache"})

    return freshness
