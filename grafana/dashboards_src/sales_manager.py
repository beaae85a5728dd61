"""Sales manager: what are my teams and reps doing today, and how is the pipeline converting?

Variables ``team`` and ``rep`` (multi-value; the reps offered are those of the chosen teams)
and ``period`` for the pipeline and leaderboard rows. Figures over several teams are sums of
counts, and ratios over several teams are recomputed from the summed components.
"""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.panels import Q, big_number, joined_table, matrix_table, ranking, row, trend
from grafana.promql import TREND_NOTE, Re, named, ratio_of_sums, relabel, sel, window_note
from grafana.settings import DashboardSettings
from grafana.skeleton import finish, name_variable, new_dashboard, period_variable

UID = "kpi-sales-manager"
P = "$period"
TEAMS = Re("$team")
REPS = Re("$rep")


def teams(metric: str, period: str = P, offset: str = "0") -> str:
    return sel(metric, scope="team", team=TEAMS, period=period, offset=offset)


def by_stage(metric: str) -> str:
    """A stage-keyed rule summed over the chosen teams, one series per stage."""
    return f"sum by (stage) ({teams(metric)})"


def reps(metric: str, period: str = P, offset: str = "0", **labels: str) -> str:
    return sel(metric, scope="rep", rep=REPS, period=period, offset=offset, **labels)


def build(settings: DashboardSettings) -> Dashboard:
    money = settings.money_unit
    today = window_note("day", "0")
    now = window_note(P, "0")
    over_teams = ("Over the chosen teams: counts are summed and ratios are recomputed from "
                  "the summed components, never averaged.")
    d = (
        new_dashboard(UID, "Sales manager",
                      "Live activity by rep and type, qualified leads, conversion, win rate, "
                      "sales velocity and cycle length, pipeline created, and the rep "
                      "leaderboard, for the chosen teams and reps.", settings,
                      refresh="30s", time_from="now-24h")
        .with_variable(name_variable(
            "team", "Team", "Teams the engine lists (team scope of kpi:leads_created), by their "
            "roster names; a team the roster does not name is shown by id.",
            "team", 'kpi:leads_created{scope="team"}', multi=True, all_value=".*"))
        .with_variable(name_variable(
            "rep", "Rep", "Reps with contributions in the chosen teams (kpi_rep_contributions "
            "carries both the team and the rep), by their roster names; a rep the roster does "
            "not list is shown by id.",
            "rep", 'kpi_rep_contributions{team=~"$team"}', multi=True))
        .with_variable(period_variable("month"))

        .with_row(row("Today"))
        .with_panel(big_number(
            "Activities today", f"Activities logged by the chosen teams (kpi:activities). "
            f"{over_teams} {today}",
            [Q(f'sum({teams("kpi:activities", "day")})', "activities")], unit="short", w=4,
            decimals=0))
        .with_panel(big_number(
            "Deals won today", f"Deals closed won by the chosen teams (kpi:deals_won). {today}",
            [Q(f'sum({teams("kpi:deals_won", "day")})', "deals won")], unit="short", w=4,
            decimals=0))
        .with_panel(big_number(
            "Leads qualified today", f"Leads qualified by the chosen teams "
            f"(kpi:leads_qualified). {today}",
            [Q(f'sum({teams("kpi:leads_qualified", "day")})', "leads qualified")],
            unit="short", w=4, decimals=0))
        .with_panel(trend(
            "Activity events per minute (last hour, all teams)",
            "Activity events the workers counted per minute, from their processing counters "
            "(kpi:events:rate5m, a 5-minute rate): live throughput, company-wide, by arrival "
            "time rather than event time, so it is not filtered by team.",
            [Q('sum(kpi:events:rate5m{type="activity.logged", outcome="counted"}) * 60',
               "activities / min")],
            unit="short", w=12, h=5, time_from="1h", decimals=1))
        .with_panel(ranking(
            "Activities today by rep", f"Activities logged per rep (kpi:activities, rep "
            f"scope). {today}",
            [Q(f'sort_desc({named(reps("kpi:activities", "day"), "rep")})', "{{rep_name}}")],
            unit="short",
            w=8, h=10))
        .with_panel(matrix_table(
            "Activities today by rep and type",
            f"Activities per rep (rows) and activity type (columns) "
            f"(kpi:activities_by_type). {today}",
            reps("kpi:activities_by_type", "day"), rows="rep", columns="activity_type",
            w=8, h=10, names=True))
        .with_panel(trend(
            "Activities today by type",
            f"Today's activities of the chosen teams by type, as they accumulated "
            f"(kpi:activities_by_type, day offset 0). {over_teams} {TREND_NOTE}",
            [Q(f'sum by (activity_type) ({teams("kpi:activities_by_type", "day")})',
               "{{activity_type}}")],
            unit="short", w=8, h=10, stacked=True))

        .with_row(row("Pipeline and conversion — $period to date"))
        .with_panel(big_number(
            "Leads qualified", f"Leads qualified (kpi:leads_qualified). {over_teams} {now}",
            [Q(f'sum({teams("kpi:leads_qualified")})', "leads qualified")], unit="short",
            w=4, decimals=0))
        .with_panel(big_number(
            "Pipeline created", "Deals created, by the earliest deal.created of each deal "
            f"(kpi:deals_created). {over_teams} {now}",
            [Q(f'sum({teams("kpi:deals_created")})', "deals created")], unit="short", w=4,
            decimals=0))
        .with_panel(big_number(
            "Lead conversion", "Deals won over leads qualified in the same window "
            f"(kpi:lead_conversion_rate). {over_teams} {now}",
            [Q(ratio_of_sums(teams("kpi:deals_won"), teams("kpi:leads_qualified")),
               "conversion")],
            unit="percentunit", w=4, decimals=1))
        .with_panel(big_number(
            "Win rate", "Deals won over deals closed (won + lost) (kpi:win_rate). "
            f"{over_teams} {now}",
            [Q(ratio_of_sums(teams("kpi:deals_won"), teams("kpi:deals_won"),
                             teams("kpi:deals_lost")), "win rate")],
            unit="percentunit", w=4, decimals=1))
        .with_panel(big_number(
            "Sales cycle", "Mean days from deal creation to won close, over won closes with a "
            f"known cycle (kpi:avg_sales_cycle_days). {over_teams} {now}",
            [Q(ratio_of_sums(teams("kpi:sales_cycle_seconds_sum"),
                             teams("kpi:sales_cycles_known")) + " / 86400", "days")],
            unit="d", w=4, decimals=1))
        .with_panel(big_number(
            "Revenue won", f"Sum of won amounts (kpi:revenue_won). {over_teams} {now}",
            [Q(f'sum({teams("kpi:revenue_won")})', "revenue won")], unit=money, w=4))
        .with_panel(ranking(
            "Sales velocity by team",
            "Revenue per day the pipeline produces: deals created × average deal size × win "
            f"rate / average cycle days (kpi:sales_velocity), per team. {now}",
            [Q(f'sort_desc({named(teams("kpi:sales_velocity"), "team")})', "{{team_name}}")],
            unit=money, w=8))
        .with_panel(ranking(
            "Sales cycle by team (days)",
            f"Mean sales cycle in days per team (kpi:avg_sales_cycle_days). {now}",
            [Q(f'sort({named(teams("kpi:avg_sales_cycle_days"), "team")})', "{{team_name}}")],
            unit="d", w=8))
        .with_panel(trend(
            "Pipeline created this $period by team",
            f"Deals created in the current window as they accumulated (kpi:deals_created). "
            f"{TREND_NOTE}",
            [Q(named(teams("kpi:deals_created"), "team"), "{{team_name}}")], unit="short",
            w=8))
        .with_panel(joined_table(
            "Funnel by team",
            f"Each team's funnel, ratios as recorded per team. {now}", "team",
            [("Leads created", teams("kpi:leads_created"), "short"),
             ("Leads qualified", teams("kpi:leads_qualified"), "short"),
             ("Qualification", teams("kpi:lead_qualification_rate"), "percentunit"),
             ("Deals created", teams("kpi:deals_created"), "short"),
             ("Deals won", teams("kpi:deals_won"), "short"),
             ("Deals lost", teams("kpi:deals_lost"), "short"),
             ("Win rate", teams("kpi:win_rate"), "percentunit"),
             ("Conversion", teams("kpi:lead_conversion_rate"), "percentunit"),
             ("Velocity / day", teams("kpi:sales_velocity"), money)],
            w=24, h=8, sort_by="Deals won", names=True))

        .with_row(row("Open pipeline by stage — chosen teams"))
        .with_panel(big_number(
            "Open deals", "Deals open now (kpi:pipeline_deals), counted for the team that owns "
            f"each deal now. {over_teams} {now}",
            [Q(f'sum({teams("kpi:pipeline_deals")})', "open deals")], unit="short", w=4,
            decimals=0))
        .with_panel(big_number(
            "Open pipeline", "Amount of the deals open now (kpi:pipeline_amount) and that "
            "amount weighted by each deal's stage probability (kpi:pipeline_weighted). "
            f"{over_teams} {now}",
            [Q(f'sum({teams("kpi:pipeline_amount")})', "amount"),
             Q(f'sum({teams("kpi:pipeline_weighted")})', "weighted")], unit=money, w=8))
        .with_panel(big_number(
            "Due this $period", "Open deals expected to close inside the window: amount "
            "(kpi:pipeline_due_amount) and weighted (kpi:pipeline_due_weighted). "
            f"{over_teams} {now}",
            [Q(f'sum({teams("kpi:pipeline_due_amount")})', "due"),
             Q(f'sum({teams("kpi:pipeline_due_weighted")})', "due weighted")], unit=money,
            w=6))
        .with_panel(big_number(
            "Forecast this $period", "Revenue won plus the due open deals: commit "
            "(kpi:forecast_commit) and weighted by stage probability (kpi:forecast_weighted). "
            f"{over_teams} {now}",
            [Q(f'sum({teams("kpi:forecast_commit")})', "commit"),
             Q(f'sum({teams("kpi:forecast_weighted")})', "weighted")], unit=money, w=6))
        .with_panel(joined_table(
            "Pipeline by stage",
            "Per configured stage: deals open now (kpi:pipeline_deals_by_stage), their amount "
            "(kpi:pipeline_amount_by_stage) and weighted amount "
            "(kpi:pipeline_weighted_by_stage); entries into the stage in the window "
            "(kpi:stage_entries); mean days of the stays in the stage that ended in the window "
            "(kpi:stage_stay_seconds_sum / kpi:stage_stays, empty when none ended). Deals "
            f"without a stage are in the totals above only. {over_teams} {now}",
            "stage",
            [("Open deals", by_stage("kpi:pipeline_deals_by_stage"), "short"),
             ("Amount", by_stage("kpi:pipeline_amount_by_stage"), money),
             ("Weighted", by_stage("kpi:pipeline_weighted_by_stage"), money),
             ("Entries", by_stage("kpi:stage_entries"), "short"),
             ("Mean days in stage",
              f'{by_stage("kpi:stage_stay_seconds_sum")} / '
              f'({by_stage("kpi:stage_stays")} > 0) / 86400', "d")],
            w=12, h=9))
        .with_panel(ranking(
            "Open amount by stage",
            "Amount of the deals open now in each stage (kpi:pipeline_amount_by_stage). "
            f"{over_teams} {now}",
            [Q(f'sort_desc({by_stage("kpi:pipeline_amount_by_stage")})', "{{stage}}")],
            unit=money, w=6, h=9))
        .with_panel(ranking(
            "Mean days in stage",
            "Mean length in days of the stays in each stage that ended in the window "
            "(kpi:stage_stay_seconds_sum / kpi:stage_stays, summed over the chosen teams, "
            f"then divided). {now}",
            [Q(f'sort_desc({by_stage("kpi:stage_stay_seconds_sum")} / '
               f'({by_stage("kpi:stage_stays")} > 0) / 86400)', "{{stage}}")],
            unit="d", w=6, h=9))

        .with_row(row("Rep leaderboard — $period to date"))
        .with_panel(joined_table(
            "Rep leaderboard",
            "The chosen reps ranked by revenue won, with attainment of their own revenue "
            f"target (kpi:target_attainment, rep scope) where one is configured. {now}",
            "rep",
            [("Revenue won", reps("kpi:revenue_won"), money),
             ("Attainment", relabel(reps("kpi:target_attainment", kpi="revenue_won"),
                                   "kpi", "", "", ""), "percentunit"),
             ("Deals won", reps("kpi:deals_won"), "short"),
             ("Win rate", reps("kpi:win_rate"), "percentunit"),
             ("Avg deal size", reps("kpi:avg_deal_size"), money),
             ("Pipeline created", reps("kpi:deals_created"), "short"),
             ("Leads qualified", reps("kpi:leads_qualified"), "short"),
             ("Activities", reps("kpi:activities"), "short")],
            w=24, h=12, sort_by="Revenue won", names=True))
    )
    return finish(d)
