"""The names of the report's KPIs per scope, and which of them take targets and pacing.

Why a module of names alone: the configuration checks targets against these lists at start-up
and the KPI formulas, the Prometheus rules and the dashboards are checked against them in
tests; none of those should have to import the formulas (or each other) to know a name.
"""

from __future__ import annotations

REP_KPIS = (
    "leads_created", "leads_qualified", "lead_qualification_rate", "activities",
    "activities_by_type", "deals_created", "deals_won", "deals_lost", "revenue_won", "win_rate",
    "lead_conversion_rate", "avg_deal_size", "avg_sales_cycle_days", "sales_velocity",
    "revenue_growth", "revenue_growth_yoy",
)
TEAM_KPIS = REP_KPIS + ("active_reps", "revenue_per_rep")
COMPANY_KPIS = TEAM_KPIS + (
    "spend_marketing", "spend_sales", "spend_total", "new_customers", "cac",
    "customers_active_start", "customers_active_end", "customers_churned", "churn_rate",
    "retention_rate", "mrr_start", "mrr_end", "mrr_new", "mrr_churned", "arpa", "clv",
)
# SPEC §7.4, in every scope, after the v1 KPIs of that scope.
PIPELINE_KPIS = (
    "pipeline_deals", "pipeline_amount", "pipeline_weighted", "pipeline_deals_by_stage",
    "pipeline_amount_by_stage", "pipeline_amount_by_category", "pipeline_due_amount",
    "pipeline_due_weighted", "stage_entries", "avg_days_in_stage", "forecast_commit",
    "forecast_best_case", "forecast_weighted",
)
_BREAKDOWNS = frozenset({
    "activities_by_type", "pipeline_deals_by_stage", "pipeline_amount_by_stage",
    "pipeline_amount_by_category", "stage_entries", "avg_days_in_stage"})
PIPELINE_SCALARS = tuple(k for k in PIPELINE_KPIS if k not in _BREAKDOWNS)
# Every numeric KPI (SPEC §4, §7.4) can have a target; a breakdown is not a number.
TARGETABLE_KPIS = tuple(k for k in COMPANY_KPIS if k not in _BREAKDOWNS) + PIPELINE_SCALARS
# The KPIs with a target in each scope (config validation).
TEAM_TARGETABLE = tuple(k for k in TEAM_KPIS if k not in _BREAKDOWNS) + PIPELINE_SCALARS
REP_TARGETABLE = tuple(k for k in REP_KPIS if k not in _BREAKDOWNS) + PIPELINE_SCALARS
# SPEC §7.5: targets on these get expected, pace and projection.
ADDITIVE_KPIS = frozenset({
    "leads_created", "leads_qualified", "activities", "deals_created", "deals_won",
    "deals_lost", "revenue_won", "spend_marketing", "spend_sales", "spend_total",
    "new_customers", "mrr_new"})
