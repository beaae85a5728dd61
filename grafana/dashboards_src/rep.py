"""Rep: one rep's activities, pipeline, wins and attainment against their own targets.

Variable ``rep`` (one rep) and ``period``. Targets come from the engine's ``[[targets]]`` with
``rep = "…"`` (kpi:target, kpi:target_attainment at rep scope).
"""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.panels import (
    ATTAINMENT,
    PACE,
    Q,
    big_number,
    joined_table,
    ranking,
    row,
    series_table,
    trend,
)
from grafana.promql import TREND_NOTE, sel, window_note
from grafana.settings import DashboardSettings
from grafana.skeleton import finish, name_variable, new_dashboard, period_variable

UID = "kpi-rep"
P = "$period"


def rep(metric: str, period: str = P, offset: str = "0", **labels: str) -> str:
    return sel(metric, scope="rep", rep="$rep", period=period, offset=offset, **labels)


def build(settings: DashboardSettings) -> Dashboard:
    money = settings.money_unit
    today = window_note("day", "0")
    now = window_note(P, "0")
    d = (
        new_dashboard(UID, "Sales rep",
                      "One rep: today's activities, pipeline, wins and attainment against "
                      "the rep's targets.", settings, refresh="1m", time_from="now-7d")
        .with_variable(name_variable(
            "rep", "Rep", "Reps the engine lists (rep scope of kpi:activities), by their roster "
            "names; a rep the roster does not list is shown by id.",
            "rep", 'kpi:activities{scope="rep"}', multi=False))
        .with_variable(period_variable("month"))

        .with_row(row("Today"))
        .with_panel(big_number(
            "Activities today", f"Activities logged (kpi:activities). {today}",
            [Q(rep("kpi:activities", "day"), "activities")], unit="short", w=6, decimals=0))
        .with_panel(big_number(
            "Deals won today", f"Deals closed won (kpi:deals_won). {today}",
            [Q(rep("kpi:deals_won", "day"), "deals won")], unit="short", w=6, decimals=0))
        .with_panel(ranking(
            "Activities today by type", f"Activities per type (kpi:activities_by_type). "
            f"{today}",
            [Q(rep("kpi:activities_by_type", "day"), "{{activity_type}}")], unit="short",
            w=12, h=5))

        .with_row(row("$period to date"))
        .with_panel(big_number(
            "Revenue won", f"Sum of won amounts (kpi:revenue_won). {now}",
            [Q(rep("kpi:revenue_won"), "revenue won")], unit=money, w=6))
        .with_panel(big_number(
            "Deals won", f"Deals closed won (kpi:deals_won). {now}",
            [Q(rep("kpi:deals_won"), "deals won")], unit="short", w=3, decimals=0))
        .with_panel(big_number(
            "Win rate", f"Deals won over deals closed (kpi:win_rate). {now}",
            [Q(rep("kpi:win_rate"), "win rate")], unit="percentunit", w=3, decimals=1))
        .with_panel(big_number(
            "Pipeline created", f"Deals created (kpi:deals_created). {now}",
            [Q(rep("kpi:deals_created"), "deals created")], unit="short", w=3, decimals=0))
        .with_panel(big_number(
            "Leads qualified", f"Leads qualified (kpi:leads_qualified). {now}",
            [Q(rep("kpi:leads_qualified"), "leads qualified")], unit="short", w=3,
            decimals=0))
        .with_panel(big_number(
            "Avg deal size", f"Revenue won over deals won (kpi:avg_deal_size). {now}",
            [Q(rep("kpi:avg_deal_size"), "avg deal size")], unit=money, w=3))
        .with_panel(big_number(
            "Sales cycle", f"Mean days from creation to won close (kpi:avg_sales_cycle_days). "
            f"{now}",
            [Q(rep("kpi:avg_sales_cycle_days"), "days")], unit="d", w=3, decimals=1))
        .with_panel(ranking(
            "Target attainment",
            "Each KPI the rep has a target for: its value over the target "
            f"(kpi:target_attainment, rep scope). {now}",
            [Q(rep("kpi:target_attainment"), "{{kpi}}")], unit="percentunit", w=12,
            maximum=1.2, thresholds=ATTAINMENT))
        .with_panel(series_table(
            "Targets", "The rep's configured [[targets]] (kpi:target), one row per KPI and "
            "period; money targets are in the reporting currency. Window: every window of "
            "that period.",
            sel("kpi:target", scope="rep", rep="$rep"), show=("kpi", "period"),
            value_header="Target", unit="short", w=12))
        .with_panel(trend(
            "Revenue won this $period and its target",
            "The rep's revenue won in the current window as it accumulated (kpi:revenue_won), "
            f"with the rep's revenue target (kpi:target). {TREND_NOTE}",
            [Q(rep("kpi:revenue_won"), "revenue won to date"),
             Q(sel("kpi:target", kpi="revenue_won", scope="rep", rep="$rep", period=P),
               "target")],
            unit=money, w=12))
        .with_panel(trend(
            "Activities this $period by type",
            f"The rep's activities in the current window by type (kpi:activities_by_type). "
            f"{TREND_NOTE}",
            [Q(rep("kpi:activities_by_type"), "{{activity_type}}")], unit="short", w=12,
            stacked=True))
        .with_row(row("My pipeline and pace — $period"))
        .with_panel(ranking(
            "My open deals by stage",
            "The rep's deals open now in each configured stage "
            "(kpi:pipeline_deals_by_stage, rep scope: the deal's rep now). Deals without a "
            f"stage count in the total only. {now}",
            [Q(rep("kpi:pipeline_deals_by_stage"), "{{stage}}")], unit="short", w=8, h=8))
        .with_panel(big_number(
            "My open pipeline",
            "Amount of the rep's deals open now (kpi:pipeline_amount), that amount weighted "
            "by stage probability (kpi:pipeline_weighted), and the part due in the window "
            f"(kpi:pipeline_due_amount). {now}",
            [Q(rep("kpi:pipeline_amount"), "amount"),
             Q(rep("kpi:pipeline_weighted"), "weighted"),
             Q(rep("kpi:pipeline_due_amount"), "due")],
            unit=money, w=6, h=8))
        .with_panel(ranking(
            "Pace on my targets",
            "Each KPI the rep has a target for: its value to date over where the target "
            "should be by now, target × the share of the window gone by "
            "(kpi:target_pace, SPEC §7.5); below 100 % is behind pace. Only for targets on "
            f"counts and sums. {now}",
            [Q(rep("kpi:target_pace"), "{{kpi}}")], unit="percentunit", w=10, h=8,
            maximum=1.5, thresholds=PACE))
        .with_panel(joined_table(
            "My targets: expected by now and projection",
            "Per target of the rep: attainment (kpi:target_attainment), the value expected "
            "by now (kpi:target_expected = target × share of the window gone by), pace "
            "(kpi:target_pace) and the run-rate projection to the window's end "
            "(kpi:target_projection). Money targets are in the reporting currency. "
            f"{now}",
            "kpi",
            [("Attainment", rep("kpi:target_attainment"), "percentunit"),
             ("Expected by now", rep("kpi:target_expected"), "short"),
             ("Pace", rep("kpi:target_pace"), "percentunit"),
             ("Projection", rep("kpi:target_projection"), "short")],
            w=24, h=6))
    )
    return finish(d)
