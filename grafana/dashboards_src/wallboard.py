"""TV wallboard: big numbers readable across the room, refreshed every 30 seconds.

No variables and no time picker: it runs unattended in kiosk mode with the dark theme
(``/d/kpi-wallboard/sales-tv-wallboard?orgId=1&kiosk&theme=dark``, grafana/README.md).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.common import BarGaugeDisplayMode
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.panels import ATTAINMENT, Q, big_number, progress, ranking, trend
from grafana.promql import Re, named, relabel, sel, window_note
from grafana.settings import DashboardSettings
from grafana.skeleton import REFRESH_INTERVALS, finish, new_dashboard

UID = "kpi-wallboard"


def company(metric: str, period: str, offset: str = "0", **labels: str) -> str:
    return sel(metric, scope="company", period=period, offset=offset, **labels)


def build(settings: DashboardSettings) -> Dashboard:
    money = settings.money_unit
    month = window_note("month", "0")
    today = window_note("day", "0")
    attainment = sel("kpi:target_attainment", scope=Re("company|team"), period="month",
                     offset="0")
    target_progress = relabel(relabel(named(attainment, "team"), "who", "$1", "team_name", "(.+)"),
                              "who", "company", "scope", "company")
    d = (
        new_dashboard(UID, "Sales TV wallboard",
                      "Kiosk wallboard: revenue and target this month, today's wins and "
                      "activity, the rep leaderboard and target progress.", settings,
                      refresh="30s", time_from="now-6h", extra_tags=["wallboard"])
        .timepicker(dash.TimePicker().hidden(True).refresh_intervals(REFRESH_INTERVALS))

        .with_panel(big_number(
            "Revenue this month", f"Revenue won (kpi:revenue_won). {month}",
            [Q(company("kpi:revenue_won", "month"), "revenue")], unit=money, w=6, h=7))
        .with_panel(progress(
            "Month target", f"Company revenue won over its monthly target "
            f"(kpi:target_attainment). {month}",
            [Q(company("kpi:target_attainment", "month", kpi="revenue_won"), "attainment")],
            w=6, h=7))
        .with_panel(big_number(
            "Deals won today", f"Deals closed won (kpi:deals_won). {today}",
            [Q(company("kpi:deals_won", "day"), "deals won")], unit="short", w=4, h=7,
            decimals=0))
        .with_panel(big_number(
            "Activities today", f"Activities logged (kpi:activities). {today}",
            [Q(company("kpi:activities", "day"), "activities")], unit="short", w=4, h=7,
            decimals=0))
        .with_panel(big_number(
            "New customers this month", f"Customers acquired (kpi:new_customers). {month}",
            [Q(company("kpi:new_customers", "month"), "new customers")], unit="short", w=4,
            h=7, decimals=0))

        .with_panel(ranking(
            "Leaderboard — revenue this month",
            f"The ten reps with the most revenue won (kpi:revenue_won, rep scope), by their "
            f"roster name (kpi_rep_info; the rep id where the roster has none). {month}",
            [Q("topk(10, " + named(sel("kpi:revenue_won", scope="rep", period="month",
                                       offset="0"), "rep") + ")", "{{rep_name}}")],
            unit=money, w=8, h=13, display=BarGaugeDisplayMode.LCD))
        .with_panel(ranking(
            "Today's activity by team",
            f"Activities logged per team (kpi:activities, team scope), by the team's roster "
            f"name (kpi_team_info). {today}",
            [Q("sort_desc(" + named(sel("kpi:activities", scope="team", period="day",
                                        offset="0"), "team") + ")", "{{team_name}}")],
            unit="short", w=8, h=13))
        .with_panel(ranking(
            "Target progress this month",
            "Every monthly target of the company and the teams: the KPI over its target "
            f"(kpi:target_attainment). {month}",
            [Q(f"sort_desc({target_progress})", "{{who}} · {{kpi}}")],
            unit="percentunit", w=8, h=13, maximum=1.2, thresholds=ATTAINMENT))

        .with_panel(big_number(
            "MRR now", "Monthly recurring revenue of the subscriptions active now "
            f"(kpi:mrr_end of today's window). {today}",
            [Q(company("kpi:mrr_end", "day"), "MRR")], unit=money, w=6, h=6))
        .with_panel(big_number(
            "Win rate this month", f"Deals won over deals closed (kpi:win_rate). {month}",
            [Q(company("kpi:win_rate", "month"), "win rate")], unit="percentunit", w=6, h=6,
            decimals=1))
        .with_panel(trend(
            "Activities per minute (last hour)",
            "Activity events the workers counted per minute, from their processing counters "
            "(kpi:events:rate5m, a 5-minute rate), company-wide, by arrival time.",
            [Q('sum(kpi:events:rate5m{type="activity.logged", outcome="counted"}) * 60',
               "activities / min")],
            unit="short", w=12, h=6, time_from="1h", decimals=1))
    )
    return finish(d)
