"""KPI definitions (SPEC §4): pure functions from summed measures to the report's numbers.

Why formulas over sums: each KPI is computed from additive parts at the very end, never by
averaging ratios, so a team, a company or a set of workers all give exact results. The same
parts are what the Prometheus export publishes, and the recording rules repeat these formulas.
"""

from __future__ import annotations

from engine.catalog import ADDITIVE_KPIS
from engine.config import Stage
from engine.event import MICRO
from engine.measures import (
    ACT_CALL,
    ACT_DEMO,
    ACT_EMAIL,
    ACT_MEETING,
    ACT_OTHER,
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
    STAGE_ENTRIES,
    STAGE_STAY_SUM_US,
    STAGE_STAYS,
    stage_measure,
)
from engine.pipeline import DUE_AMOUNT, OPEN_AMOUNT, OPEN_DEALS, SLOT

_DAY_US = 86_400 * MICRO

CATEGORIES = ("pipeline", "best_case", "commit")


def ratio(numerator: int | float | None, denominator: int | float | None) -> float | None:
    """SPEC §4: a ratio is null when its denominator is 0 or null (or its numerator null).

    Integer sums pass 2**53 (cycle times in µs do) and Python divides two integers with one
    rounding; both builds must give the same bits, so the parameters say ``int`` as well (a
    bare ``float`` is a C double in the compiled build: the integer would be rounded first).
    """
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def money(micros: int | float) -> float:
    """Micro-units as currency units. ``int | float`` keeps the division Python's: the compiled
    build divides two plain ints through doubles, which rounds twice beyond 2**53."""
    return micros / MICRO


def growth(current: int, earlier: int) -> float | None:
    """``current / earlier − 1`` on micro-unit revenue; null when ``earlier`` is 0."""
    r = ratio(current, earlier)
    return None if r is None else r - 1


def flow_kpis(v: list[int]) -> dict[str, object]:
    """The flow KPIs every scope shares (growth filled in by the caller)."""
    leads_created = v[LEADS_CREATED]
    leads_qualified = v[LEADS_QUALIFIED]
    won, lost, created = v[DEALS_WON], v[DEALS_LOST], v[DEALS_CREATED]
    revenue = money(v[REVENUE_WON])
    win_rate = ratio(won, won + lost)
    avg_deal_size = ratio(revenue, won)
    cycles = v[CYCLE_COUNT]
    avg_cycle = ratio(v[CYCLE_SUM_US], cycles * _DAY_US) if cycles else None
    if win_rate is None or avg_deal_size is None or not avg_cycle:
        velocity = None
    else:
        velocity = created * avg_deal_size * win_rate / avg_cycle
    by_type = {
        "call": v[ACT_CALL], "email": v[ACT_EMAIL], "meeting": v[ACT_MEETING],
        "demo": v[ACT_DEMO], "other": v[ACT_OTHER],
    }
    return {
        "leads_created": leads_created,
        "leads_qualified": leads_qualified,
        "lead_qualification_rate": ratio(leads_qualified, leads_created),
        "activities": sum(by_type.values()),
        "activities_by_type": by_type,
        "deals_created": created,
        "deals_won": won,
        "deals_lost": lost,
        "revenue_won": revenue,
        "win_rate": win_rate,
        "lead_conversion_rate": ratio(won, leads_qualified),
        "avg_deal_size": avg_deal_size,
        "avg_sales_cycle_days": avg_cycle,
        "sales_velocity": velocity,
        "revenue_growth": None,
        "revenue_growth_yoy": None,
    }


def team_kpis(kpis: dict[str, object], active_reps: int) -> None:
    kpis["active_reps"] = active_reps
    kpis["revenue_per_rep"] = ratio(kpis["revenue_won"], active_reps)  # type: ignore[arg-type]


def company_kpis(kpis: dict[str, object], v: list[int], stocks, period: str,
                 gross_margin: float) -> None:
    """Spend, customers, churn, MRR and CLV: company scope only."""
    spend_total = v[SPEND_MARKETING] + v[SPEND_SALES]
    new_customers = v[NEW_CUSTOMERS]
    start, end = stocks.customers_active_start, stocks.customers_active_end
    churn_rate = ratio(stocks.customers_churned, start)
    mrr_end = money(stocks.mrr_end)
    arpa = ratio(mrr_end, end)
    clv = None
    if period == "month" and arpa is not None:
        clv = ratio(arpa * gross_margin, churn_rate)
    kpis.update({
        "spend_marketing": money(v[SPEND_MARKETING]),
        "spend_sales": money(v[SPEND_SALES]),
        "spend_total": money(spend_total),
        "new_customers": new_customers,
        "cac": ratio(money(spend_total), new_customers),
        "customers_active_start": start,
        "customers_active_end": end,
        "customers_churned": stocks.customers_churned,
        "churn_rate": churn_rate,
        "retention_rate": ratio(stocks.customers_retained, start),
        "mrr_start": money(stocks.mrr_start),
        "mrr_end": mrr_end,
        "mrr_new": money(v[MRR_NEW]),
        "mrr_churned": money(stocks.mrr_churned),
        "arpa": arpa,
        "clv": clv,
    })


def pipeline_kpis(kpis: dict[str, object], pipeline: list[int], flows: list[int],
                  stages: tuple[Stage, ...], forecast: bool) -> None:
    """SPEC §7.4 from exact parts: ``pipeline`` is the scope's vector of
    :mod:`engine.pipeline` (open deals, amount, due amount per stage slot), ``flows`` its flow
    vector (stage entries and stays); ``forecast`` only in offset-0 windows."""
    n = len(stages)
    null_slot = SLOT * n
    deals_by_stage: dict[str, int] = {}
    amount_by_stage: dict[str, float] = {}
    category_micros = {"pipeline": pipeline[null_slot + OPEN_AMOUNT], "best_case": 0,
                       "commit": 0}
    due_category_micros = {"pipeline": pipeline[null_slot + DUE_AMOUNT], "best_case": 0,
                           "commit": 0}
    weighted = due_weighted = 0.0
    entries: dict[str, int] = {}
    days_in_stage: dict[str, float | None] = {}
    for k, stage in enumerate(stages):
        base = SLOT * k
        amount, due = pipeline[base + OPEN_AMOUNT], pipeline[base + DUE_AMOUNT]
        deals_by_stage[stage.id] = pipeline[base + OPEN_DEALS]
        amount_by_stage[stage.id] = money(amount)
        category_micros[stage.category] += amount
        due_category_micros[stage.category] += due
        weighted += stage.probability * amount
        due_weighted += stage.probability * due
        entries[stage.id] = flows[stage_measure(k, STAGE_ENTRIES)]
        stays = flows[stage_measure(k, STAGE_STAYS)]
        days_in_stage[stage.id] = (ratio(flows[stage_measure(k, STAGE_STAY_SUM_US)],
                                         stays * _DAY_US) if stays else None)
    deals = sum(pipeline[SLOT * k + OPEN_DEALS] for k in range(n + 1))
    amount_micros = sum(pipeline[SLOT * k + OPEN_AMOUNT] for k in range(n + 1))
    due_micros = sum(pipeline[SLOT * k + DUE_AMOUNT] for k in range(n + 1))
    revenue = kpis["revenue_won"]
    assert isinstance(revenue, float)
    commit = best_case = forecast_weighted = None
    if forecast:
        commit = revenue + money(due_category_micros["commit"])
        best_case = commit + money(due_category_micros["best_case"])
        forecast_weighted = revenue + due_weighted / MICRO
    kpis.update({
        "pipeline_deals": deals,
        "pipeline_amount": money(amount_micros),
        "pipeline_weighted": weighted / MICRO,
        "pipeline_deals_by_stage": deals_by_stage,
        "pipeline_amount_by_stage": amount_by_stage,
        "pipeline_amount_by_category": {c: money(category_micros[c]) for c in CATEGORIES},
        "pipeline_due_amount": money(due_micros),
        "pipeline_due_weighted": due_weighted / MICRO,
        "stage_entries": entries,
        "avg_days_in_stage": days_in_stage,
        "forecast_commit": commit,
        "forecast_best_case": best_case,
        "forecast_weighted": forecast_weighted,
    })


def pacing(kpi: str, kpis: dict[str, object], target: float, elapsed: float,
           current: bool) -> dict[str, float | None]:
    """SPEC §7.5 for one target: ``elapsed`` is f, the share of the window gone by (absolute
    time), ``current`` says the window is an offset-0 one."""
    value = kpis.get(kpi)
    expected = pace = projection = coverage = forecast_attainment = None
    if kpi in ADDITIVE_KPIS and isinstance(value, (int, float)):
        expected = target * elapsed
        pace = ratio(value, expected)
        projection = ratio(value, elapsed)
    if kpi == "revenue_won" and current and isinstance(value, float):
        remaining = target - value
        due = kpis.get("pipeline_due_amount")
        if remaining > 0 and isinstance(due, float):
            coverage = due / remaining
        weighted = kpis.get("forecast_weighted")
        if isinstance(weighted, float):
            forecast_attainment = ratio(weighted, target)
    return {"expected": expected, "pace": pace, "projection": projection,
            "coverage": coverage, "forecast_attainment": forecast_attainment}


def attainment(value: object, target: float) -> float | None:
    """SPEC §6.10: null when the KPI is null or the target is 0."""
    if value is None or target == 0 or not isinstance(value, (int, float)):
        return None
    return value / target
