"""The KPI report document (SPEC §5), built from one core or many at an instant ``as_of``.

Why one builder: ``kpi-engine report`` over a file and ``GET /api/kpis`` of a live worker must
give the same document number by number, so both call :func:`build_report`.
"""

from __future__ import annotations

from datetime import timezone

from engine.calendar import REPORT_WINDOWS, Calendar, Window, from_micros
from engine.config import Config, Target
from engine.core import Core
from engine.kpis import attainment, company_kpis, flow_kpis, growth, team_kpis
from engine.measures import REVENUE_WON, Aggregate
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
    windows = [
        _window_document(view, w, s, teams, reps, config, targets.get(w.period, ()))
        for w, s in zip(spans, stocks)
    ]
    return {
        "as_of": from_micros(as_of, timezone.utc).isoformat(),
        "timezone": config.calendar.timezone,
        "currency": config.money.currency,
        "events": {"read": read, "counted": counted, "duplicate": duplicate,
                   "invalid": invalid, "not_visible": not_visible},
        "windows": windows,
    }


def _window_document(view: View, w: Window, stocks: Stocks, teams: list[str], reps: list[str],
                     config: Config, targets: tuple[Target, ...]) -> dict:
    cal, as_of = view.calendar, view.as_of
    flows = view.flows(w.start, min(w.end, as_of))
    earlier = view.growth_base(w)
    year_ago = view.year_ago(w)

    def scope(vec: list[int], base: list[int] | None, yoy: list[int] | None) -> dict:
        kpis = flow_kpis(vec)
        if base is not None:
            kpis["revenue_growth"] = growth(vec[REVENUE_WON], base[REVENUE_WON])
        if yoy is not None:
            kpis["revenue_growth_yoy"] = growth(vec[REVENUE_WON], yoy[REVENUE_WON])
        return kpis

    company = scope(flows.company, _vec(earlier, None), _vec(year_ago, None))
    team_kpis(company, flows.active_reps())
    company_kpis(company, flows.company, stocks, w.period, config.money.gross_margin)
    team_docs = {}
    for team in teams:
        kpis = scope(flows.team(team), _vec(earlier, team, "team"), _vec(year_ago, team, "team"))
        team_kpis(kpis, flows.active_reps(team))
        team_docs[team] = kpis
    rep_docs = {
        rep: scope(flows.rep(rep), _vec(earlier, rep, "rep"), _vec(year_ago, rep, "rep"))
        for rep in reps
    }
    return {
        "period": w.period,
        "offset": w.offset,
        "start": cal.format_instant(w.start),
        "end": cal.format_instant(w.end),
        "company": {"kpis": company, "targets": _targets(company, targets, "company", None)},
        "teams": {t: {"kpis": k, "targets": _targets(k, targets, "team", t)}
                  for t, k in team_docs.items()},
        "reps": {r: {"kpis": k, "targets": _targets(k, targets, "rep", r)}
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


def _targets(kpis: dict, targets: tuple[Target, ...], kind: str, name: str | None) -> dict:
    out = {}
    for t in targets:
        if kind == "company" and (t.team is not None or t.rep is not None):
            continue
        if kind == "team" and t.team != name:
            continue
        if kind == "rep" and t.rep != name:
            continue
        out[t.kpi] = {"target": t.value, "attainment": attainment(kpis.get(t.kpi), t.value)}
    return out
