"""Additive KPI components: the exact integer parts that every ratio KPI is computed from.

Why: several workers each hold some partitions. Each exports these components for its own
partitions; ``sum()`` across workers is then exactly the whole (counts, micro-unit money and
microsecond durations are integers), and Prometheus recording rules derive the ratios from the
summed parts — never an average of ratios. Entity ids never become labels; teams, reps,
activity types and spend categories are bounded dimensions.

A component is keyed by ``(name, labels)`` where ``labels`` is a tuple of (label, value)
pairs; every key carries ``period`` and ``offset``. Scope labels: ``scope`` is ``company``,
``team`` or ``rep`` with ``team``/``rep`` naming it ("" where not applicable).

The pipeline (SPEC §7.4) adds a ``stage`` label (a configured stage id, "" for deals without
one): open deals, their amount and their due amount at the window's effective end — for the
offset-0 windows only, since the history of a point-in-time value is what Prometheus keeps —
and the stage flows (entries, summed stay lengths and their count) of every window.
Probabilities and categories are configuration, exported once by the collector, so every
component stays an exact integer.
"""

from __future__ import annotations

from engine.calendar import REPORT_WINDOWS, Calendar
from engine.core import Core
from engine.measures import (
    ACTIVITY_INDEX,
    STAGE_ENTRIES,
    STAGE_STAY_SUM_US,
    STAGE_STAYS,
    CYCLE_COUNT,
    CYCLE_SUM_US,
    DEALS_CREATED,
    DEALS_LOST,
    DEALS_WON,
    LEADS_CREATED,
    LEADS_QUALIFIED,
    MRR_NEW,
    NEW_CUSTOMERS,
    REVENUE_WON,
    SPEND_MARKETING,
    SPEND_SALES,
    Aggregate,
    stage_measure,
)
from engine.pipeline import DUE_AMOUNT, OPEN_AMOUNT, OPEN_DEALS, SLOT, pipeline_for_windows
from engine.view import View

Labels = tuple[tuple[str, str], ...]
Components = dict[tuple[str, Labels], int]

# name, measure index, unit ("count", "micros" money, "us" duration), labels beyond scope
SCOPED_MEASURES: tuple[tuple[str, int, str], ...] = (
    ("leads_created", LEADS_CREATED, "count"),
    ("leads_qualified", LEADS_QUALIFIED, "count"),
    ("deals_created", DEALS_CREATED, "count"),
    ("deals_won", DEALS_WON, "count"),
    ("deals_lost", DEALS_LOST, "count"),
    ("revenue_won", REVENUE_WON, "micros"),
    ("sales_cycle_seconds_sum", CYCLE_SUM_US, "us"),
    ("sales_cycles_known", CYCLE_COUNT, "count"),
)
COMPANY_MEASURES: tuple[tuple[str, int, str], ...] = (
    ("new_customers", NEW_CUSTOMERS, "count"),
    ("mrr_new", MRR_NEW, "micros"),
)
STOCKS: tuple[tuple[str, str], ...] = (
    ("customers_active_start", "count"), ("customers_active_end", "count"),
    ("customers_churned", "count"), ("customers_retained", "count"),
    ("mrr_start", "micros"), ("mrr_end", "micros"), ("mrr_churned", "micros"),
)
# name, slot offset in the pipeline vector (engine.pipeline), unit
PIPELINE_PARTS: tuple[tuple[str, int, str], ...] = (
    ("pipeline_open_deals", OPEN_DEALS, "count"),
    ("pipeline_open_amount", OPEN_AMOUNT, "micros"),
    ("pipeline_due_amount", DUE_AMOUNT, "micros"),
)
# name, which stage flow measure (engine.measures), unit
STAGE_FLOWS: tuple[tuple[str, int, str], ...] = (
    ("stage_entries", STAGE_ENTRIES, "count"),
    ("stage_stay_seconds_sum", STAGE_STAY_SUM_US, "us"),
    ("stage_stays", STAGE_STAYS, "count"),
)
UNITS: dict[str, str] = {name: unit for name, _, unit in
                         SCOPED_MEASURES + COMPANY_MEASURES + PIPELINE_PARTS + STAGE_FLOWS}
UNITS.update(dict(STOCKS))
UNITS.update({"activities": "count", "spend": "micros", "rep_contributions": "count",
              "revenue_won_growth_base": "micros", "revenue_won_yoy_base": "micros"})

def components(cores: list[Core], calendar: Calendar, as_of: int,
               include_zeros: bool = True) -> Components:
    """All components of every report window at ``as_of`` for ``cores``."""
    view = View(cores, calendar, as_of)
    teams, reps = view.teams(), view.reps()
    stages = list(cores[0].stage_index) if cores else []
    out: Components = {}
    spans = [calendar.window(period, offset, as_of) for period, offset in REPORT_WINDOWS]
    all_stocks = view.stocks_for([(w.start, min(w.end, as_of)) for w in spans])
    current = [w for w in spans if w.offset == 0]
    for w, pipeline in zip(current, pipeline_for_windows(cores, current, as_of, len(stages))):
        base = (("period", w.period), ("offset", "0"))
        _pipeline(out, base, pipeline, teams, reps, stages)
    for w, stocks in zip(spans, all_stocks):
        period, offset = w.period, w.offset
        base = (("period", period), ("offset", str(offset)))
        flows = view.flows(w.start, min(w.end, as_of))
        _scoped(out, base, flows, teams, reps)
        _stage_flows(out, base, flows, teams, reps, stages)
        _company(out, base, flows)
        for name, _unit in STOCKS:
            out[(name, base)] = getattr(stocks, name)
        for (team, rep), n in flows.pairs.items():
            if n or include_zeros:
                out[("rep_contributions", base + (("team", team or ""), ("rep", rep)))] = n
        growth_base = view.growth_base(w)
        if growth_base is not None:
            _revenue(out, "revenue_won_growth_base", base, growth_base, teams, reps)
        year_ago = view.year_ago(w)
        if year_ago is not None:
            _revenue(out, "revenue_won_yoy_base", base, year_ago, teams, reps)
    if not include_zeros:
        out = {k: v for k, v in out.items() if v}
    return out


def _scopes(agg: Aggregate, teams: list[str], reps: list[str]):
    yield (("scope", "company"), ("team", ""), ("rep", "")), agg.company
    for team in teams:
        yield (("scope", "team"), ("team", team), ("rep", "")), agg.team(team)
    for rep in reps:
        yield (("scope", "rep"), ("team", ""), ("rep", rep)), agg.rep(rep)


def _scoped(out: Components, base: Labels, agg: Aggregate, teams: list[str],
            reps: list[str]) -> None:
    for scope, vec in _scopes(agg, teams, reps):
        labels = base + scope
        for name, index, _unit in SCOPED_MEASURES:
            out[(name, labels)] = vec[index]
        for activity_type, index in ACTIVITY_INDEX.items():
            out[("activities", labels + (("activity_type", activity_type),))] = vec[index]


def _pipeline(out: Components, base: Labels, agg: Aggregate, teams: list[str],
              reps: list[str], stages: list[str]) -> None:
    slots = [*stages, ""]  # the last slot holds the deals without a stage
    for scope, vec in _scopes(agg, teams, reps):
        labels = base + scope
        for k, stage in enumerate(slots):
            stage_labels = labels + (("stage", stage),)
            for name, part, _unit in PIPELINE_PARTS:
                out[(name, stage_labels)] = vec[SLOT * k + part]


def _stage_flows(out: Components, base: Labels, agg: Aggregate, teams: list[str],
                 reps: list[str], stages: list[str]) -> None:
    if not stages:
        return
    for scope, vec in _scopes(agg, teams, reps):
        labels = base + scope
        for k, stage in enumerate(stages):
            stage_labels = labels + (("stage", stage),)
            for name, which, _unit in STAGE_FLOWS:
                out[(name, stage_labels)] = vec[stage_measure(k, which)]


def _company(out: Components, base: Labels, agg: Aggregate) -> None:
    for name, index, _unit in COMPANY_MEASURES:
        out[(name, base)] = agg.company[index]
    out[("spend", base + (("category", "marketing"),))] = agg.company[SPEND_MARKETING]
    out[("spend", base + (("category", "sales"),))] = agg.company[SPEND_SALES]


def _revenue(out: Components, name: str, base: Labels, agg: Aggregate, teams: list[str],
             reps: list[str]) -> None:
    for scope, vec in _scopes(agg, teams, reps):
        out[(name, base + scope)] = vec[REVENUE_WON]


def add_components(into: Components, other: Components) -> Components:
    """Sum ``other`` into ``into`` (what Prometheus ``sum()`` does across workers)."""
    for key, value in other.items():
        into[key] = into.get(key, 0) + value
    return into
