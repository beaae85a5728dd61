"""Executive: is the company on target, growing, and acquiring and keeping customers profitably?

Company scope for revenue, growth, unit economics and MRR; team scope for the comparison.
The ``period`` variable picks the engine window (month, fiscal quarter, fiscal year).
"""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.panels import (
    ATTAINMENT,
    COVERAGE,
    GROWTH,
    PACE,
    Q,
    big_number,
    joined_table,
    progress,
    ranking,
    row,
    trend,
)
from grafana.promql import TREND_NOTE, named, relabel, sel, window_names, window_note
from grafana.settings import DashboardSettings
from grafana.skeleton import finish, new_dashboard, period_variable

UID = "kpi-executive"
P = "$period"


def company(metric: str, period: str = P, offset: str = "0", **labels: str) -> str:
    return sel(metric, scope="company", period=period, offset=offset, **labels)


def team(metric: str, **labels: str) -> str:
    return sel(metric, scope="team", period=P, offset="0", **labels)


def build(settings: DashboardSettings) -> Dashboard:
    money = settings.money_unit
    now = window_note(P, "0")
    revenue_target = sel("kpi:target", kpi="revenue_won", scope="company", period=P)
    d = (
        new_dashboard(UID, "Sales executive",
                      "Revenue against target, growth, unit economics, churn and MRR movement, "
                      "and the teams side by side.", settings, time_from="now-90d")
        .with_variable(period_variable("month", ("month", "quarter", "year")))

        .with_row(row("Revenue — $period to date"))
        .with_panel(big_number(
            "Revenue won", f"Sum of won deal amounts (kpi:revenue_won). {now}",
            [Q(company("kpi:revenue_won"), "revenue won")], unit=money, w=5))
        .with_panel(big_number(
            "Revenue target",
            "The configured [[targets]] value for revenue_won at company scope (kpi:target); "
            f"empty when no target is configured. Window: every {P} window.",
            [Q(revenue_target, "target")], unit=money, w=4, no_value="no target"))
        .with_panel(progress(
            "Target attainment",
            "Revenue won to date divided by the full-window target "
            f"(kpi:target_attainment{{kpi=\"revenue_won\"}}): early in a window it is low by "
            f"design. {now}",
            [Q(company("kpi:target_attainment", kpi="revenue_won"), "attainment")], w=5))
        .with_panel(big_number(
            "Growth vs previous $period",
            "Revenue won so far against the previous window over the same elapsed time "
            f"(kpi:revenue_growth, month over month for months). {now}",
            [Q(company("kpi:revenue_growth"), "growth")], unit="percentunit", w=5,
            decimals=1, thresholds=GROWTH))
        .with_panel(big_number(
            "Growth vs a year ago",
            "Revenue won so far against the same window one year earlier over the same "
            f"elapsed time (kpi:revenue_growth_yoy). {now}",
            [Q(company("kpi:revenue_growth_yoy"), "growth YoY")], unit="percentunit", w=5,
            decimals=1, thresholds=GROWTH))
        .with_panel(trend(
            "Revenue won this $period and its target",
            "Revenue won in the current window as it accumulated (kpi:revenue_won, offset 0), "
            f"with the company revenue target (kpi:target). {TREND_NOTE}",
            [Q(company("kpi:revenue_won"), "revenue won to date"), Q(revenue_target, "target")],
            unit=money, w=16))
        .with_panel(ranking(
            "Revenue by window",
            "Revenue won in the current window to date (offset 0), the previous window "
            "(offset 1) and the same window one year earlier (offset 12 for months, 4 for "
            "quarters; for years the previous year is the one a year earlier). Window: the "
            "period chosen in the Period variable, computed by the engine in its configured "
            "time zone. Grafana's time range does not change these numbers.",
            [Q(window_names(sel("kpi:revenue_won", scope="company", period=P)),
               "{{window}}")],
            unit=money, w=8))

        .with_row(row("Forecast and pipeline — $period"))
        .with_panel(big_number(
            "Open pipeline",
            "Deals open now (kpi:pipeline_deals), their amount (kpi:pipeline_amount) and "
            "their amount weighted by the stage's probability (kpi:pipeline_weighted). "
            f"{now}",
            [Q(company("kpi:pipeline_amount"), "amount"),
             Q(company("kpi:pipeline_weighted"), "weighted")],
            unit=money, w=5))
        .with_panel(big_number(
            "Due this $period",
            "Open deals expected to close inside the window: amount "
            "(kpi:pipeline_due_amount) and weighted (kpi:pipeline_due_weighted). "
            f"{now}",
            [Q(company("kpi:pipeline_due_amount"), "due"),
             Q(company("kpi:pipeline_due_weighted"), "due weighted")],
            unit=money, w=5))
        .with_panel(progress(
            "Weighted forecast attainment",
            "The weighted forecast over the revenue target "
            f"(kpi:target_forecast_attainment{{kpi=\"revenue_won\"}}). {now}",
            [Q(company("kpi:target_forecast_attainment", kpi="revenue_won"), "forecast")],
            w=5))
        .with_panel(big_number(
            "Revenue pace",
            "Revenue won to date over where the target should be by now, target × the share "
            "of the window gone by (kpi:target_pace{kpi=\"revenue_won\"}); below 100 % is "
            f"behind pace. {now}",
            [Q(company("kpi:target_pace", kpi="revenue_won"), "pace")],
            unit="percentunit", w=4, decimals=0, thresholds=PACE))
        .with_panel(big_number(
            "Pipeline coverage",
            "Open pipeline due in the window over what is left to the revenue target "
            "(kpi:target_coverage{kpi=\"revenue_won\"}, SPEC §7.5); empty once the target "
            f"is reached. 3× is the usual rule of thumb. {now}",
            [Q(company("kpi:target_coverage", kpi="revenue_won"), "coverage")],
            unit="suffix:×", w=5, decimals=1, thresholds=COVERAGE, no_value="target reached"))
        .with_panel(ranking(
            "Forecast vs target",
            "Revenue won to date (kpi:revenue_won); commit: won plus the open deals due in "
            "the window whose stage is in the commit category (kpi:forecast_commit); best "
            "case: commit plus the due best-case deals (kpi:forecast_best_case); weighted: "
            "won plus the due deals weighted by their stage's probability "
            "(kpi:forecast_weighted); and the company revenue target (kpi:target). Due = "
            f"expected close inside the window (SPEC §7.4). {now}",
            [Q(company("kpi:revenue_won"), "won"),
             Q(company("kpi:forecast_commit"), "commit"),
             Q(company("kpi:forecast_best_case"), "best case"),
             Q(company("kpi:forecast_weighted"), "weighted"),
             Q(revenue_target, "target")],
            unit=money, w=10))
        .with_panel(ranking(
            "Open pipeline by forecast category",
            "Amount of the open deals by their stage's forecast category "
            "(kpi:pipeline_amount_by_category); deals without a stage count under pipeline. "
            f"{now}",
            [Q(company("kpi:pipeline_amount_by_category"), "{{category}}")],
            unit=money, w=5, h=8))
        .with_panel(trend(
            "Forecast this $period",
            "Commit, best case and weighted forecast of the current window as they moved, "
            f"with the company revenue target. {TREND_NOTE}",
            [Q(company("kpi:forecast_commit"), "commit"),
             Q(company("kpi:forecast_best_case"), "best case"),
             Q(company("kpi:forecast_weighted"), "weighted"),
             Q(revenue_target, "target")],
            unit=money, w=9, h=8))

        .with_row(row("Customers and unit economics — $period to date"))
        .with_panel(big_number(
            "New customers", f"Customers acquired in the window (kpi:new_customers). {now}",
            [Q(company("kpi:new_customers"), "new customers")], unit="short", w=4, decimals=0))
        .with_panel(big_number(
            "CAC",
            "Customer acquisition cost: marketing and sales spend divided by new customers "
            f"(kpi:cac). {now}",
            [Q(company("kpi:cac"), "CAC")], unit=money, w=4))
        .with_panel(big_number(
            "CLV",
            "Customer lifetime value: ARPA × gross margin / churn rate (kpi:clv); defined for "
            "month windows only, so this panel ignores the Period variable. "
            + window_note("month", "1") + " Also shown: the current month to date.",
            [Q(company("kpi:clv", period="month", offset="1"), "last month"),
             Q(company("kpi:clv", period="month", offset="0"), "this month so far")],
            unit=money, w=4))
        .with_panel(big_number(
            "Churn rate",
            "Customers active at the window start and not at its end (or now), over those "
            f"active at the start (kpi:churn_rate). {now}",
            [Q(company("kpi:churn_rate"), "churn")], unit="percentunit", w=4, decimals=1,
            thresholds=[(None, "green"), (0.05, "orange"), (0.1, "red")]))
        .with_panel(big_number(
            "Retention rate",
            "Customers active at both the window start and its end (or now), over those "
            f"active at the start (kpi:retention_rate). {now}",
            [Q(company("kpi:retention_rate"), "retention")], unit="percentunit", w=4,
            decimals=1, thresholds=[(None, "red"), (0.9, "orange"), (0.95, "green")]))
        .with_panel(big_number(
            "ARPA", f"Average MRR per active account at the window end (kpi:arpa). {now}",
            [Q(company("kpi:arpa"), "ARPA")], unit=money, w=4))
        .with_panel(ranking(
            "MRR movement this $period",
            "MRR at the window start (kpi:mrr_start), new MRR of subscriptions started in the "
            "window (kpi:mrr_new), MRR of subscriptions active at the start and not at the end "
            "(kpi:mrr_churned), and MRR at the window end or now (kpi:mrr_end). End is not "
            "exactly start + new − churned: a subscription started and cancelled inside the "
            f"window counts in new only. {now}",
            [Q(company("kpi:mrr_start"), "start"), Q(company("kpi:mrr_new"), "new"),
             Q(company("kpi:mrr_churned"), "churned"), Q(company("kpi:mrr_end"), "end")],
            unit=money, w=12))
        .with_panel(trend(
            "MRR and spend",
            "MRR now (kpi:mrr_end of today's window, i.e. at each instant) and the spend of "
            f"the current {P} window to date (kpi:spend_total). {TREND_NOTE}",
            [Q(company("kpi:mrr_end", period="day"), "MRR"),
             Q(company("kpi:spend_total"), "spend this $period")],
            unit=money, w=12))

        .with_row(row("Teams — $period to date"))
        .with_panel(joined_table(
            "Team comparison",
            "Each team's KPIs as recorded per team (a team's ratio is computed from that "
            f"team's summed components, never averaged over reps). {now}",
            "team",
            [("Revenue won", team("kpi:revenue_won"), money),
             ("Attainment", relabel(team("kpi:target_attainment", kpi="revenue_won"),
                                   "kpi", "", "", ""), "percentunit"),
             ("Growth", team("kpi:revenue_growth"), "percentunit"),
             ("Deals won", team("kpi:deals_won"), "short"),
             ("Win rate", team("kpi:win_rate"), "percentunit"),
             ("Avg deal size", team("kpi:avg_deal_size"), money),
             ("Active reps", team("kpi:active_reps"), "short"),
             ("Revenue per rep", team("kpi:revenue_per_rep"), money),
             ("Pace", relabel(team("kpi:target_pace", kpi="revenue_won"), "kpi", "", "", ""),
              "percentunit"),
             ("Forecast (weighted)", team("kpi:forecast_weighted"), money),
             ("Coverage", relabel(team("kpi:target_coverage", kpi="revenue_won"),
                                  "kpi", "", "", ""), "suffix:×")],
            w=24, sort_by="Revenue won", names=True))
        .with_panel(ranking(
            "Revenue by team", f"Revenue won per team (kpi:revenue_won). {now}",
            [Q(f'sort_desc({named(team("kpi:revenue_won"), "team")})', "{{team_name}}")],
            unit=money, w=12))
        .with_panel(ranking(
            "Revenue target attainment by team",
            f"Team revenue won over the team's revenue target (kpi:target_attainment). {now}",
            [Q("sort_desc(" + named(team("kpi:target_attainment", kpi="revenue_won"), "team")
               + ")", "{{team_name}}")],
            unit="percentunit", w=12, maximum=1.2, thresholds=ATTAINMENT))
    )
    return finish(d)
