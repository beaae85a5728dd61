"""Hand-checked cases for the contract's tricky definitions (SPEC §2–§4, §6).

Each expected number below was worked out by hand from the spec text, not by running the
engine; the comments show the arithmetic.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from engine.calendar import Calendar, to_micros
from engine.config import config_from_mapping
from engine.core import Core
from engine.event import MICRO, Event
from engine.report import build_report


def at(text: str) -> int:
    return to_micros(datetime.fromisoformat(text))


def make_config(**calendar):
    return config_from_mapping({"calendar": calendar, "money": {"currency": "EUR"}})


def report(events: list[Event], as_of: str, config) -> dict:
    core = Core(Calendar(config.calendar))
    for e in events:
        core.apply(e)
    return build_report([core], at(as_of), config)


def window(doc: dict, period: str, offset: int) -> dict:
    return next(w for w in doc["windows"] if w["period"] == period and w["offset"] == offset)


def ev(i: int, type_: str, ts: str, **fields) -> Event:
    for money_field in ("amount", "mrr"):
        if money_field in fields:
            fields[money_field] = round(fields[money_field] * MICRO)
    if "opened_at" in fields:
        fields["opened_at"] = at(fields["opened_at"])
    return Event(event_id=f"e{i:03d}", type=type_, ts=at(ts), **fields)


BERLIN = make_config(timezone="Europe/Berlin", week_start="monday")


def test_dst_spring_day_is_23_hours_and_windows_use_local_midnights():
    # 2026-03-29: clocks go 02:00 CET -> 03:00 CEST in Berlin.
    doc = report([ev(1, "activity.logged", "2026-03-29T23:30:00+02:00", team_id="t",
                     rep_id="r", activity_type="call"),
                  ev(2, "activity.logged", "2026-03-28T23:30:00+00:00", team_id="t",
                     rep_id="r", activity_type="call")],  # = 03-29 00:30 CET: same day
                 "2026-03-30T10:00:00+02:00", BERLIN)
    day1 = window(doc, "day", 1)
    assert (day1["start"], day1["end"]) == ("2026-03-29T00:00:00+01:00",
                                            "2026-03-30T00:00:00+02:00")
    assert day1["company"]["kpis"]["activities"] == 2
    week0 = window(doc, "week", 0)  # Monday 2026-03-30
    assert week0["start"] == "2026-03-30T00:00:00+02:00"
    assert week0["company"]["kpis"]["activities"] == 0
    week1 = window(doc, "week", 1)  # Monday 23 March (CET) to Monday 30 March (CEST)
    assert (week1["start"], week1["end"]) == ("2026-03-23T00:00:00+01:00",
                                              "2026-03-30T00:00:00+02:00")
    assert week1["company"]["kpis"]["activities"] == 2


def test_dst_autumn_day_is_25_hours():
    doc = report([ev(1, "lead.created", "2026-10-25T23:59:59+01:00", lead_id="L",
                     team_id="t", rep_id="r")], "2026-10-26T12:00:00+01:00", BERLIN)
    day1 = window(doc, "day", 1)
    assert (day1["start"], day1["end"]) == ("2026-10-25T00:00:00+02:00",
                                            "2026-10-26T00:00:00+01:00")
    assert day1["company"]["kpis"]["leads_created"] == 1


def test_midnight_in_a_dst_gap_starts_at_the_first_instant_of_the_date():
    # America/Santiago skipped 2022-09-11 00:00 -> 01:00 (SPEC §6.12).
    config = make_config(timezone="America/Santiago")
    doc = report([], "2022-09-11T12:00:00-03:00", config)
    assert window(doc, "day", 0)["start"] == "2022-09-11T01:00:00-03:00"
    assert window(doc, "day", 1)["end"] == "2022-09-11T01:00:00-03:00"


def test_fiscal_year_starting_in_april():
    config = make_config(timezone="UTC", fiscal_year_start_month=4)
    doc = report([], "2026-05-10T00:00:00Z", config)
    spans = {(w["period"], w["offset"]): (w["start"][:10], w["end"][:10]) for w in doc["windows"]}
    assert spans[("quarter", 0)] == ("2026-04-01", "2026-07-01")
    assert spans[("quarter", 1)] == ("2026-01-01", "2026-04-01")
    assert spans[("quarter", 4)] == ("2025-04-01", "2025-07-01")
    assert spans[("year", 0)] == ("2026-04-01", "2027-04-01")
    assert spans[("year", 1)] == ("2025-04-01", "2026-04-01")
    assert spans[("month", 12)] == ("2025-05-01", "2025-06-01")


def test_sunday_week_start():
    config = make_config(timezone="UTC", week_start="sunday")
    doc = report([], "2026-11-04T00:00:00Z", config)  # a Wednesday
    assert window(doc, "week", 0)["start"][:10] == "2026-11-01"


UTC = make_config(timezone="UTC")


def test_reopened_deal_counts_by_its_latest_close_only():
    events = [
        ev(1, "deal.created", "2026-05-01T00:00:00Z", deal_id="D", team_id="t", rep_id="a"),
        ev(2, "deal.closed", "2026-05-11T00:00:00Z", deal_id="D", team_id="t", rep_id="a",
           outcome="won", amount=100.0, customer_id="C"),
        ev(3, "deal.closed", "2026-06-02T00:00:00Z", deal_id="D", team_id="t", rep_id="b",
           outcome="lost"),
    ]
    doc = report(events, "2026-06-10T00:00:00Z", UTC)
    may, june = window(doc, "month", 1), window(doc, "month", 0)
    assert may["company"]["kpis"]["deals_won"] == 0  # superseded: counts nowhere (§6.5)
    assert may["company"]["kpis"]["revenue_won"] == 0.0
    assert june["company"]["kpis"]["deals_lost"] == 1
    assert june["reps"]["b"]["kpis"]["deals_lost"] == 1
    assert june["company"]["kpis"]["win_rate"] == 0.0
    # but the won close still acquired the customer in May (§6.6)
    assert may["company"]["kpis"]["new_customers"] == 1
    # seen before the re-close, the won close counts
    earlier = report(events, "2026-06-01T00:00:00Z", UTC)
    assert window(earlier, "month", 1)["company"]["kpis"]["deals_won"] == 1
    assert window(earlier, "month", 1)["company"]["kpis"]["revenue_won"] == 100.0


def test_won_close_without_deal_created_counts_and_uses_its_opened_at():
    events = [
        ev(1, "deal.closed", "2026-05-11T00:00:00Z", deal_id="D1", team_id="t", rep_id="a",
           outcome="won", amount=300.0, customer_id="C1", opened_at="2026-05-01T00:00:00Z"),
        ev(2, "deal.closed", "2026-05-12T00:00:00Z", deal_id="D2", team_id="t", rep_id="a",
           outcome="won", amount=100.0, customer_id="C2"),  # no cycle known
    ]
    kpis = window(report(events, "2026-05-20T00:00:00Z", UTC), "month", 0)["company"]["kpis"]
    assert kpis["deals_won"] == 2 and kpis["deals_created"] == 0
    assert kpis["avg_sales_cycle_days"] == 10.0  # only D1: 10 days
    assert kpis["avg_deal_size"] == 200.0
    assert kpis["sales_velocity"] == 0.0  # 0 deals created × 200 × 1.0 / 10


def test_cycle_from_deal_created_wins_over_opened_at_and_floors_at_zero():
    events = [
        ev(1, "deal.created", "2026-05-03T00:00:00Z", deal_id="D", team_id="t", rep_id="a"),
        ev(2, "deal.closed", "2026-05-02T00:00:00Z", deal_id="D", team_id="t", rep_id="a",
           outcome="won", amount=10.0, customer_id="C", opened_at="2026-04-01T00:00:00Z"),
    ]
    kpis = window(report(events, "2026-05-20T00:00:00Z", UTC), "month", 0)["company"]["kpis"]
    assert kpis["avg_sales_cycle_days"] == 0.0
    assert kpis["sales_velocity"] is None  # mean cycle 0 (§6.13)


def test_overlapping_subscriptions_count_the_customer_once():
    events = [
        ev(1, "subscription.started", "2026-04-05T00:00:00Z", subscription_id="S1",
           customer_id="C", mrr=100.0),
        ev(2, "subscription.started", "2026-04-20T00:00:00Z", subscription_id="S2",
           customer_id="C", mrr=50.0),
        ev(3, "subscription.cancelled", "2026-05-10T00:00:00Z", subscription_id="S1",
           customer_id="C"),
    ]
    kpis = window(report(events, "2026-05-20T00:00:00Z", UTC), "month", 0)["company"]["kpis"]
    assert kpis["customers_active_start"] == 1 and kpis["customers_active_end"] == 1
    assert kpis["customers_churned"] == 0 and kpis["retention_rate"] == 1.0
    assert kpis["mrr_start"] == 150.0 and kpis["mrr_end"] == 50.0
    assert kpis["mrr_churned"] == 100.0  # S1 active at start, not at eff_end
    assert kpis["arpa"] == 50.0
    assert kpis["clv"] is None  # churn rate 0


def test_customer_who_churns_and_returns():
    events = [
        ev(1, "subscription.started", "2026-03-01T00:00:00Z", subscription_id="S1",
           customer_id="C", mrr=80.0),
        ev(2, "subscription.started", "2026-03-01T00:00:00Z", subscription_id="X1",
           customer_id="K", mrr=20.0),
        ev(3, "subscription.cancelled", "2026-04-15T00:00:00Z", subscription_id="S1",
           customer_id="C"),
        ev(4, "subscription.started", "2026-05-10T00:00:00Z", subscription_id="S2",
           customer_id="C", mrr=90.0),
        ev(5, "subscription.cancelled", "2026-01-01T00:00:00Z", subscription_id="X1",
           customer_id="K"),  # before its start: no effect
        ev(6, "subscription.cancelled", "2026-05-01T00:00:00Z", subscription_id="NOPE",
           customer_id="K"),  # without a start: no effect
    ]
    doc = report(events, "2026-05-20T00:00:00Z", make_config(timezone="UTC"))
    april = window(doc, "month", 1)["company"]["kpis"]
    assert (april["customers_active_start"], april["customers_active_end"]) == (2, 1)
    assert april["customers_churned"] == 1 and april["churn_rate"] == 0.5
    assert april["clv"] == pytest.approx(20.0 * 1.0 / 0.5)  # arpa 20 × margin 1 / churn 0.5
    may = window(doc, "month", 0)["company"]["kpis"]
    assert may["new_customers"] == 0  # acquired in March, returning is not new
    assert may["mrr_new"] == 90.0
    assert (may["customers_active_start"], may["customers_active_end"]) == (1, 2)
    march = window(doc, "quarter", 1)["company"]["kpis"]  # Jan–Mar
    assert march["new_customers"] == 2


def test_to_date_growth_at_the_start_of_a_month():
    # as_of six hours into June: May is measured over its first six hours only.
    events = [
        ev(1, "deal.closed", "2026-05-01T05:00:00Z", deal_id="A", team_id="t", rep_id="r",
           outcome="won", amount=100.0, customer_id="C1"),
        ev(2, "deal.closed", "2026-05-01T07:00:00Z", deal_id="B", team_id="t", rep_id="r",
           outcome="won", amount=999.0, customer_id="C2"),
        ev(3, "deal.closed", "2026-06-01T01:00:00Z", deal_id="D", team_id="t", rep_id="r",
           outcome="won", amount=150.0, customer_id="C3"),
        ev(4, "deal.closed", "2025-06-01T02:00:00Z", deal_id="E", team_id="t", rep_id="r",
           outcome="won", amount=50.0, customer_id="C4"),
        ev(5, "deal.closed", "2025-06-01T08:00:00Z", deal_id="F", team_id="t", rep_id="r",
           outcome="won", amount=500.0, customer_id="C5"),
    ]
    doc = report(events, "2026-06-01T06:00:00Z", UTC)
    june = window(doc, "month", 0)
    assert june["company"]["kpis"]["revenue_growth"] == pytest.approx(150 / 100 - 1)
    assert june["company"]["kpis"]["revenue_growth_yoy"] == pytest.approx(150 / 50 - 1)
    assert june["teams"]["t"]["kpis"]["revenue_growth"] == pytest.approx(0.5)
    may = window(doc, "month", 1)  # offset 1: whole May over whole April (0): null
    assert may["company"]["kpis"]["revenue_growth"] is None
    assert window(doc, "month", 12)["company"]["kpis"]["revenue_growth"] is None


def test_lead_attribution_comes_from_the_earliest_event_and_ties_break_on_event_id():
    events = [
        ev(2, "lead.created", "2026-05-02T00:00:00Z", lead_id="L", team_id="t1", rep_id="a"),
        ev(3, "lead.created", "2026-05-01T00:00:00Z", lead_id="L", team_id="t2", rep_id="b"),
        ev(5, "lead.qualified", "2026-05-03T00:00:00Z", lead_id="L", team_id="t1", rep_id="a"),
        ev(4, "lead.qualified", "2026-05-03T00:00:00Z", lead_id="L", team_id="t2", rep_id="c"),
    ]
    doc = report(events, "2026-05-20T00:00:00Z", UTC)
    month = window(doc, "month", 0)
    assert month["company"]["kpis"]["leads_created"] == 1
    assert month["teams"]["t2"]["kpis"]["leads_created"] == 1
    assert month["teams"]["t1"]["kpis"]["leads_created"] == 0
    assert month["reps"]["c"]["kpis"]["leads_qualified"] == 1  # e004 < e005
    assert month["reps"]["a"]["kpis"]["leads_qualified"] == 0
    # every rep named by a counted event is listed (§6.8), active or not
    assert set(month["reps"]) == {"a", "b", "c"}
    assert month["company"]["kpis"]["active_reps"] == 2  # b (created), c (qualified)


def test_events_at_or_after_as_of_are_not_visible():
    events = [ev(1, "activity.logged", "2026-05-20T00:00:00Z", team_id="t", rep_id="late",
                 activity_type="call"),
              ev(2, "activity.logged", "2026-05-19T23:59:59Z", team_id="t", rep_id="r",
                 activity_type="demo")]
    doc = report(events, "2026-05-20T00:00:00Z", UTC)
    assert doc["events"] == {"read": 2, "counted": 1, "duplicate": 0, "invalid": 0,
                             "not_visible": 1}
    assert set(window(doc, "day", 0)["reps"]) == {"r"}
    assert window(doc, "day", 1)["company"]["kpis"]["activities_by_type"]["demo"] == 1


def test_targets_attainment_and_replacement():
    config = config_from_mapping({
        "calendar": {"timezone": "UTC"},
        "targets": [
            {"kpi": "deals_won", "period": "month", "value": 4},
            {"kpi": "deals_won", "period": "month", "value": 2},  # replaces the first
            {"kpi": "win_rate", "period": "month", "value": 0.5, "rep": "r"},
            {"kpi": "revenue_won", "period": "month", "value": 0, "team": "t"},
            {"kpi": "deals_won", "period": "month", "value": 1, "team": "ghost"},
        ],
    })
    events = [ev(1, "deal.closed", "2026-05-02T00:00:00Z", deal_id="D", team_id="t",
                 rep_id="r", outcome="won", amount=5.0, customer_id="C")]
    month = window(report(events, "2026-05-20T00:00:00Z", config), "month", 0)

    def v1(targets: dict) -> dict:  # pacing (SPEC §7.5) is tested in test_pipeline_rules.py
        return {k: {f: t[f] for f in ("target", "attainment")} for k, t in targets.items()}

    assert v1(month["company"]["targets"]) == {"deals_won": {"target": 2.0, "attainment": 0.5}}
    assert v1(month["reps"]["r"]["targets"]) == {"win_rate": {"target": 0.5, "attainment": 2.0}}
    assert v1(month["teams"]["t"]["targets"]) == {
        "revenue_won": {"target": 0.0, "attainment": None}}
    assert "ghost" not in month["teams"]
    assert window(report(events, "2026-05-20T00:00:00Z", config), "week", 0)[
        "company"]["targets"] == {}


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Santiago", "Asia/Kolkata",
                                  "Australia/Lord_Howe", "UTC"])
def test_every_event_lands_on_its_local_date_around_midnights_and_dst(zone):
    """The core keeps the latest event's local day and its bounds to skip lookups: events just
    before, at and after local midnights (DST days included, in time order and back and
    forth) must each still land on their own local date."""
    calendar = Calendar(config_from_mapping({"calendar": {"timezone": zone}}).calendar)
    core = Core(calendar)
    instants = []
    first = calendar.local_day(to_micros(datetime.fromisoformat("2026-03-25T12:00:00+00:00")))
    for day in [*range(first, first + 12), *range(first + 190, first + 225)]:
        midnight = calendar.midnight(day)
        instants += [midnight - 1, midnight, midnight + 1, midnight + 3_600 * MICRO - 1]
    order = sorted(instants) + sorted(instants, reverse=True)[::3]
    for n, ts in enumerate(order):
        core.apply(Event(f"e{n}", "activity.logged", ts, "t1", "r1", activity_type="call"))
    for day, stamps in core.event_ts.items():
        assert {calendar.local_day(ts) for ts in stamps} == {day}
    for day, bucket in core.days.items():
        assert {calendar.local_day(c.ts) for c in bucket.contributions()} == {day}
    assert sum(len(s) for s in core.event_ts.values()) == len(order)
