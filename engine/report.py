"""The KPI report document (SPEC §5), built from one core or many at an instant ``as_of``.

Why one builder: ``kpi-engine report`` over a file and ``GET /api/kpis`` of a live worker must
give the same document number by number, so both call :func:`build_report`.
"""

from __future__ import annotations

from datetime import timezone

from engine.calendar import REPORT_WINDOWS, Calendar, Window, from_micros
from engine.config import Config, Target
from engine.core import Core
from engine.kpis import (
    attainment,
    company_kpis,
    flow_kpis,
    growth,
    pacing,
    pipeline_kpis,
    team_kpis,
)
from engine.measures import REVENUE_WON, Aggregate
from engine.pipeline import pipeline_for_windows
from engine.view import Stocks, View


def build_report(cores: list[Core], as_of: int, config: Config,
                 counts: dict[str, int] | None = None,
                 calendar: Calendar | None = None) -> dict:
    """The report at ``as_of`` (µs). ``counts`` gives ``read``, ``duplicate`` and ``invalid``.

    ``counted`` and ``not_visible`` come from the cores, since visibility depends on ``as_of``.
    """
    if calendar is None:
        calendar = cores[0].calendar if cores else Calendar(config.calendar)
    view = View(cores, calendar, as_of)
    teams, reps = view.teams(), view.reps()
    counted, not_visible = view.event_counts()
    counts = counts or {}
    duplicate = counts.get("duplicate", 0)
    invalid = counts.get("invalid", 0)
    read = counts.get("read", counted + not_visible + duplicate + invalid)
    targets = _targets_by_period(config.targets)
    spans = [calendar.window(period, offset, as_of) for period, offset in REPORT_WINDOWS]
    stocks = view.stocks_for([(w.start, min(w.end, as_of)) for w in spans])
    pipelines = pipeline_for_windows(cores, spans, as_of, len(config.pipeline.stages))
    windows = [
        _window_document(view, w, s, p, teams, reps, config, targets.get(w.period, ()))
        for w, s, p in zip(spans, stocks, pipelines)
    ]
    return {
        "as_of": from_micros(as_of, timezone.utc).isoformat(),
        "timezone": config.calendar.timezone,
        "currency": config.money.currency,
        "events": {"read": read, "counted": counted, "duplicate": duplicate,
                   "invalid": invalid, "not_visible": not_visible},
        "windows": windows,
    }


def _window_document(view: View, w: Window, stocks: Stocks, pipeline: Aggregate,
                     teams: list[str], reps: list[str], config: Config,
                     targets: tuple[Target, ...]) -> dict:
    cal, as_of = view.calendar, view.as_of
    eff_end = min(w.end, as_of)
    flows = view.flows(w.start, eff_end)
    earlier = view.growth_base(w)
    year_ago = view.year_ago(w)
    stages = config.pipeline.stages
    current = w.offset == 0
    # SPEC §7.5's f: the share of the window gone by, in absolute time.
    elapsed = (eff_end - w.start) / (w.end - w.start)

    def scope(vec: list[int], base: list[int] | None, yoy: list[int] | None) -> dict:
        kpis = flow_kpis(vec)
        if base is not None:
            kpis["revenue_growth"] = growth(vec[REVENUE_WON], base[REVENUE_WON])
        if yoy is not None:
            kpis["revenue_growth_yoy"] = growth(vec[REVENUE_WON], yoy[REVENUE_WON])
        return kpis

    def targets_of(kpis: dict, kind: str, name: str | None) -> dict:
        return _targets(kpis, targets, kind, name, elapsed, current)

    company = scope(flows.company, _vec(earlier, None), _vec(year_ago, None))
    team_kpis(company, flows.active_reps())
    company_kpis(company, flows.company, stocks, w.period, config.money.gross_margin)
    pipeline_kpis(company, pipeline.company, flows.company, stages, current)
    team_docs = {}
    for team in teams:
        kpis = scope(flows.team(team), _vec(earlier, team, "team"), _vec(year_ago, team, "team"))
        team_kpis(kpis, flows.active_reps(team))
        pipeline_kpis(kpis, pipeline.team(team), flows.team(team), stages, current)
        team_docs[team] = kpis
    rep_docs = {}
    for rep in reps:
        kpis = scope(flows.rep(rep), _vec(earlier, rep, "rep"), _vec(year_ago, rep, "rep"))
        pipeline_kpis(kpis, pipeline.rep(rep), flows.rep(rep), stages, current)
        rep_docs[rep] = kpis
    return {
        "period": w.period,
        "offset": w.offset,
        "start": cal.format_instant(w.start),
        "end": cal.format_instant(w.end),
        "company": {"kpis": company, "targets": targets_of(company, "company", None)},
        "teams": {t: {"kpis": k, "targets": targets_of(k, "team", t)}
                  for t, k in team_docs.items()},
        "reps": {r: {"kpis": k, "targets": targets_of(k, "rep", r)}
                 for r, k in rep_docs.items()},
    }


def _vec(agg: Aggregate | None, name: str | None, kind: str = "company") -> list[int] | None:
    if agg is None:
        return None
    if kind == "company" or name is None:
        return agg.company
    if kind == "team":
        return agg.team(name)
    return agg.rep(name)


def _targets_by_period(targets: tuple[Target, ...]) -> dict[str, tuple[Target, ...]]:
    """SPEC §6.10: a later target for the same KPI, period and scope replaces an earlier one."""
    latest: dict[tuple, Target] = {}
    for t in targets:
        latest[(t.kpi, t.period, t.team, t.rep)] = t
    by_period: dict[str, list[Target]] = {}
    for t in latest.values():
        by_period.setdefault(t.period, []).append(t)
    return {p: tuple(ts) for p, ts in by_period.items()}


def _targets(kpis: dict, targets: tuple[Target, ...], kind: str, name: str | None,
             elapsed: float, current: bool) -> dict:
    """Each target of this scope: attainment (SPEC §4) and pacing (§7.5)."""
    out = {}
    for t in targets:
        if kind == "company" and (t.team is not None or t.rep is not None):
            continue
        if kind == "team" and t.team != name:
            continue
        if kind == "rep" and t.rep != name:
            continue
        entry: dict[str, object] = {"target": t.value,
                                    "attainment": attainment(kpis.get(t.kpi), t.value)}
        entry.update(pacing(t.kpi, kpis, t.value, elapsed, current))
        out[t.kpi] = entry
    return out
