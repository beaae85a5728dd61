"""Hand-checked cases for the pipeline, stage flows, forecast and pacing (SPEC §7).

Every expected number below was worked out by hand from the SPEC text, not by running the
engine; the comments show the walk (SPEC §7.3) and the arithmetic. Events go in as JSON
through the real decoder, so "stage ignored without stages" is what a user's file gets.

Each case is also loaded a second time in reverse order with every event delivered twice: the
report must be the same (SPEC §3: order and redeliveries never matter), which makes the tie
cases (decision 16) fail if a tie were broken by arrival order.

The stages of most cases (probability, forecast category):
``disc`` 0.1 pipeline · ``prop`` 0.5 best_case · ``nego`` 0.8 commit.
Unless a case says otherwise the zone is UTC and ``as_of`` is 2026-05-20T00:00Z, a Wednesday:
month 0 is May [05-01, 06-01) (31 days, f = 19/31), month 1 April, week 0 [05-18, 05-25),
quarter 0 [04-01, 07-01).
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from engine.calendar import to_micros
from engine.config import Config, config_from_mapping
from engine.core import Core
from engine.decode import Decoder
from engine.event import Event, Rejection
from engine.report import build_report

approx = pytest.approx

STAGES = (
    {"id": "disc", "probability": 0.1, "category": "pipeline"},
    {"id": "prop", "probability": 0.5, "category": "best_case"},
    {"id": "nego", "probability": 0.8, "category": "commit"},
)
AS_OF = "2026-05-20T00:00:00Z"


def make_config(timezone: str = "UTC", stages=STAGES, targets=()) -> Config:
    mapping: dict = {"calendar": {"timezone": timezone}, "money": {"currency": "EUR"}}
    if stages:
        mapping["pipeline"] = {"stages": [dict(s) for s in stages]}
    if targets:
        mapping["targets"] = [dict(t) for t in targets]
    return config_from_mapping(mapping)


UTC = make_config()


def at(text: str) -> int:
    return to_micros(datetime.fromisoformat(text))


def d(text: str) -> str:
    """``"05-16"`` -> 2026-05-16T00:00:00Z, ``"05-16 12:00"`` -> 2026-05-16T12:00:00Z."""
    day, _, clock = text.partition(" ")
    return f"2026-{day}T{clock or '00:00'}:00Z"


def ev(i: int, type_: str, ts: str, **fields) -> dict:
    return {"event_id": f"e{i:03d}", "type": type_, "occurred_at": ts, **fields}


def created(i: int, ts: str, deal: str, team: str = "t", rep: str = "a", **fields) -> dict:
    return ev(i, "deal.created", ts, deal_id=deal, team_id=team, rep_id=rep, **fields)


def updated(i: int, ts: str, deal: str, **fields) -> dict:
    return ev(i, "deal.updated", ts, deal_id=deal, **fields)


def closed(i: int, ts: str, deal: str, outcome: str, team: str = "t", rep: str = "a",
           **fields) -> dict:
    if outcome == "won":
        fields.setdefault("customer_id", f"cust-{deal}")
    return ev(i, "deal.closed", ts, deal_id=deal, team_id=team, rep_id=rep, outcome=outcome,
              **fields)


def _load(docs: list[dict], config: Config) -> Core:
    decoder = Decoder(config)
    core = Core(config.calendar, config.pipeline)
    for doc in docs:
        event = decoder(json.dumps(doc).encode())
        assert isinstance(event, Event), (doc, event)
        core.apply(event)
    return core


def report(docs: list[dict], as_of: str = AS_OF, config: Config = UTC) -> dict:
    forward = build_report([_load(docs, config)], at(as_of), config)
    scrambled = build_report([_load([*reversed(docs), *docs], config)], at(as_of), config)
    assert scrambled == forward, "arrival order or redelivery changed the report"
    return forward


def window(doc: dict, period: str, offset: int) -> dict:
    return next(w for w in doc["windows"] if w["period"] == period and w["offset"] == offset)


def kpis(doc: dict, period: str, offset: int, team: str | None = None,
         rep: str | None = None) -> dict:
    w = window(doc, period, offset)
    if team is not None:
        return w["teams"][team]["kpis"]
    if rep is not None:
        return w["reps"][rep]["kpis"]
    return w["company"]["kpis"]


def targets(doc: dict, period: str, offset: int, team: str | None = None,
            rep: str | None = None) -> dict:
    w = window(doc, period, offset)
    if team is not None:
        return w["teams"][team]["targets"]
    if rep is not None:
        return w["reps"][rep]["targets"]
    return w["company"]["targets"]


def by_stage(disc, prop, nego) -> dict:
    return {"disc": disc, "prop": prop, "nego": nego}


NO_STAYS = by_stage(None, None, None)


# -- decisions 16–22 ----------------------------------------------------------------------------

def test_decision_16_ties_at_one_instant_follow_event_id_whatever_the_type():
    events = [
        created(1, d("05-01"), "D", amount=100, stage="disc"),
        closed(4, d("05-10"), "D", "lost"),       # e004 before e005 at 05-10
        updated(5, d("05-10"), "D", stage="prop"),
        created(11, d("05-01"), "D2", amount=200, stage="disc"),
        updated(12, d("05-10"), "D2", stage="prop"),  # e012 before e013 at 05-10
        closed(13, d("05-10"), "D2", "lost"),
        updated(21, d("05-02"), "D3", stage="nego"),  # e021 before e022 at 05-02:
        created(22, d("05-02"), "D3", amount=10, stage="disc"),  # a creation is not first
    ]
    # D : e001 entry disc · e004 close: disc stay ends (05-01→05-10 = 9 d), closed ·
    #     e005 update: not open → entry prop (re-open), nothing ends. Open in prop, 100.
    # D2: e011 entry disc · e012 prop ≠ disc → entry prop, disc ends (9 d) ·
    #     e013 close: prop stay ends (05-10→05-10 = 0 d). Closed.
    # D3: e021 update opens it → entry nego · e022 created sets disc ≠ nego → entry disc,
    #     nego stay ends (0 d). Open in disc, 10.
    may = kpis(report(events), "month", 0)
    assert may["stage_entries"] == by_stage(3, 2, 1)  # disc D,D2,D3 · prop D,D2 · nego D3
    assert may["avg_days_in_stage"] == approx(by_stage(9.0, 0.0, 0.0))  # disc (9+9)/2
    assert may["pipeline_deals"] == 1 + 1  # D, D3
    assert may["pipeline_deals_by_stage"] == by_stage(1, 1, 0)
    assert may["pipeline_amount_by_stage"] == approx(by_stage(10.0, 100.0, 0.0))
    assert may["pipeline_weighted"] == approx(0.1 * 10 + 0.5 * 100)  # 51
    assert may["deals_lost"] == 2  # v1: both latest closes are lost
    assert may["deals_created"] == 3  # D, D2, D3 (each has a deal.created)


def test_decision_17_updated_without_created_opens_the_deal_but_creates_nothing():
    events = [
        updated(1, d("05-05"), "U", team_id="t", rep_id="a", stage="disc", amount=300),
        updated(2, d("05-06"), "V", amount=50),  # no team, rep or stage: company only
        created(3, d("05-07"), "C", rep="b", amount=20, stage="prop"),
    ]
    doc = report(events)
    may = kpis(doc, "month", 0)
    assert may["deals_created"] == 1  # C only
    assert kpis(doc, "month", 0, rep="a")["deals_created"] == 0
    assert kpis(doc, "month", 0, team="t")["deals_created"] == 1
    # open: U (disc 300), V (no stage, 50), C (prop 20)
    assert may["pipeline_deals"] == 3
    assert may["pipeline_amount"] == approx(370.0)
    assert may["pipeline_deals_by_stage"] == by_stage(1, 1, 0)
    assert may["pipeline_amount_by_category"] == approx(
        {"pipeline": 300.0 + 50.0, "best_case": 20.0, "commit": 0.0})
    assert may["pipeline_weighted"] == approx(0.1 * 300 + 0.5 * 20)  # 40; V weighs 0
    assert may["stage_entries"] == by_stage(1, 1, 0)  # U opened into disc; V has no stage
    team = kpis(doc, "month", 0, team="t")
    assert (team["pipeline_deals"], team["pipeline_amount"]) == (2, approx(320.0))  # U, C
    rep_a = kpis(doc, "month", 0, rep="a")
    assert (rep_a["pipeline_deals"], rep_a["pipeline_amount"]) == (1, approx(300.0))


def test_decision_18_repeated_stage_is_no_entry_but_a_reopen_is_even_into_the_same_stage():
    events = [
        created(1, d("05-01"), "D", amount=100, stage="disc"),
        updated(2, d("05-03"), "D", stage="disc"),   # repeated on an open deal: nothing
        updated(3, d("05-05"), "D", stage="prop"),   # entry prop; disc stay 4 d ends
        closed(4, d("05-07"), "D", "lost"),          # prop stay 2 d ends
        updated(5, d("05-09"), "D", stage="prop"),   # re-open: entry prop (same stage)
        updated(6, d("05-11"), "D", amount=120),     # open, stage still prop: nothing
        created(11, d("05-01"), "E", amount=1000, stage="nego"),
        closed(12, d("05-04"), "E", "lost"),         # nego stay 3 d ends
        updated(13, d("05-06"), "E", amount=900),    # re-open without a stage field: the
        #                                              stage after it is nego → entry nego
        closed(21, d("05-02"), "R", "lost"),         # only a close: never open ...
        created(22, d("05-04"), "R", amount=10, stage="disc"),  # ... until this: entry disc
    ]
    may = kpis(report(events), "month", 0)
    # entries: disc D e001, R e022 · prop D e003, D e005 · nego E e011, E e013
    assert may["stage_entries"] == by_stage(2, 2, 2)
    # ended stays: disc D 05-01→05-05 = 4 d · prop D 05-05→05-07 = 2 d · nego E 05-01→05-04
    assert may["avg_days_in_stage"] == approx(by_stage(4.0, 2.0, 3.0))
    # open at as_of: D prop 120, E nego 900, R disc 10
    assert may["pipeline_deals_by_stage"] == by_stage(1, 1, 1)
    assert may["pipeline_amount"] == approx(1030.0)
    assert may["pipeline_weighted"] == approx(0.5 * 120 + 0.8 * 900 + 0.1 * 10)  # 781
    assert (may["deals_created"], may["deals_lost"]) == (3, 3)


def test_decision_19_a_reopened_deal_keeps_the_close_properties_and_its_stage():
    events = [
        created(1, d("05-01"), "D", team="t1", rep="a", amount=100, stage="nego",
                expected_close_at=d("05-25")),
        closed(2, d("05-05"), "D", "lost", team="t2", rep="b", amount=80),
        updated(3, d("05-08"), "D", rep_id="c"),  # re-opens; sets the rep only
        created(11, d("05-01"), "F", team="t1", rep="a", amount=500, stage="disc"),
        closed(12, d("05-05"), "F", "lost", team="t2", rep="b"),
        updated(13, d("05-08"), "F", amount=450, team_id="t3", stage="prop"),
    ]
    # After the re-opens: D = team t2 (close), rep c, amount 80 (close), stage nego (before
    # the close), expected close 05-25 (from the creation);
    # F = team t3, rep b (close), amount 450, stage prop, no expected close.
    doc = report(events)
    may = kpis(doc, "month", 0)
    assert may["pipeline_deals_by_stage"] == by_stage(0, 1, 1)
    assert may["pipeline_amount_by_stage"] == approx(by_stage(0.0, 450.0, 80.0))
    assert may["pipeline_weighted"] == approx(0.8 * 80 + 0.5 * 450)  # 289
    assert may["pipeline_due_amount"] == approx(80.0)  # D only: 05-25 is in May
    assert may["pipeline_due_weighted"] == approx(0.8 * 80)
    pipe = {scope: (k["pipeline_deals"], k["pipeline_amount"])
            for scope, k in [("t1", kpis(doc, "month", 0, team="t1")),
                             ("t2", kpis(doc, "month", 0, team="t2")),
                             ("t3", kpis(doc, "month", 0, team="t3")),
                             ("a", kpis(doc, "month", 0, rep="a")),
                             ("b", kpis(doc, "month", 0, rep="b")),
                             ("c", kpis(doc, "month", 0, rep="c"))]}
    assert pipe == {"t1": (0, 0.0), "t2": (1, approx(80.0)), "t3": (1, approx(450.0)),
                    "a": (0, 0.0), "b": (1, approx(450.0)), "c": (1, approx(80.0))}
    # Flows, each for the scope after its event:
    #   D e001 entry nego (t1/a) · e002 nego stay 4 d ends (t2/b) · e003 entry nego (t2/c)
    #   F e011 entry disc (t1/a) · e012 disc stay 4 d ends (t2/b) · e013 entry prop (t3/b)
    flows = {scope: (k["stage_entries"], k["avg_days_in_stage"])
             for scope, k in [("t1", kpis(doc, "month", 0, team="t1")),
                              ("t2", kpis(doc, "month", 0, team="t2")),
                              ("t3", kpis(doc, "month", 0, team="t3")),
                              ("a", kpis(doc, "month", 0, rep="a")),
                              ("b", kpis(doc, "month", 0, rep="b")),
                              ("c", kpis(doc, "month", 0, rep="c"))]}
    assert flows == {
        "t1": (by_stage(1, 0, 1), NO_STAYS),
        "t2": (by_stage(0, 0, 1), by_stage(4.0, None, 4.0)),
        "t3": (by_stage(0, 1, 0), NO_STAYS),
        "a": (by_stage(1, 0, 1), NO_STAYS),
        "b": (by_stage(0, 1, 0), by_stage(4.0, None, 4.0)),
        "c": (by_stage(0, 0, 1), NO_STAYS),
    }
    # v1 attribution is unchanged: created by t1/a, lost by t2/b
    assert kpis(doc, "month", 0, team="t1")["deals_created"] == 2
    assert kpis(doc, "month", 0, team="t2")["deals_lost"] == 2


def test_decision_20_updated_is_no_activity_but_lists_its_team_and_rep():
    events = [
        ev(1, "activity.logged", d("05-02"), team_id="t", rep_id="a", activity_type="call"),
        updated(2, d("05-03"), "D1", team_id="t", rep_id="u", stage="disc", amount=10),
        updated(3, d("05-04"), "D2", team_id="t9", rep_id="v"),
        created(4, d("05-05"), "D3", rep="w", amount=5),
    ]
    doc = report(events)
    may = window(doc, "month", 0)
    assert set(may["teams"]) == {"t", "t9"}
    assert set(may["reps"]) == {"a", "u", "v", "w"}
    # listed in every window, April too (SPEC §4)
    assert set(window(doc, "month", 1)["reps"]) == {"a", "u", "v", "w"}
    # active: a (activity), w (first deal.created); u and v only sent updates
    assert may["company"]["kpis"]["active_reps"] == 2
    assert may["teams"]["t"]["kpis"]["active_reps"] == 2
    assert may["teams"]["t9"]["kpis"]["active_reps"] == 0
    assert may["teams"]["t9"]["kpis"]["revenue_per_rep"] is None
    # ... yet their deals are theirs in the pipeline and the stage flows
    assert may["reps"]["u"]["kpis"]["pipeline_deals"] == 1
    assert may["reps"]["u"]["kpis"]["stage_entries"] == by_stage(1, 0, 0)
    assert may["reps"]["v"]["kpis"]["pipeline_deals"] == 1  # D2: open, no stage, no amount
    assert may["reps"]["v"]["kpis"]["pipeline_amount"] == 0.0


def test_decision_21_expected_close_is_an_instant_and_null_is_never_due():
    events = [
        # 05-31T23:00Z although its local text says June: due in (UTC) May
        created(1, d("05-01 08:00"), "D1", amount=100, stage="prop",
                expected_close_at="2026-06-01T01:00:00+02:00"),
        # 04-30T23:00Z: overdue, not due in May (due in April and in the quarter)
        created(2, d("05-01 08:00"), "D2", amount=200, stage="prop",
                expected_close_at="2026-05-01T01:00:00+02:00"),
        created(3, d("05-01 08:00"), "D3", amount=400, stage="prop"),  # null: never due
        # 06-01T00:30Z although its local text says May 31: not due in May
        created(4, d("05-01 08:00"), "D4", amount=800, stage="prop",
                expected_close_at="2026-05-31T23:30:00-01:00"),
    ]
    doc = report(events)
    may = kpis(doc, "month", 0)
    assert may["pipeline_amount"] == approx(1500.0)
    assert may["pipeline_due_amount"] == approx(100.0)  # D1
    assert may["pipeline_due_weighted"] == approx(50.0)
    assert (may["forecast_commit"], may["forecast_best_case"], may["forecast_weighted"]) == (
        0.0, approx(100.0), approx(50.0))  # revenue 0 + due commit 0; + due best_case 100
    quarter = kpis(doc, "quarter", 0)  # [04-01, 07-01): D1, D2, D4
    assert quarter["pipeline_due_amount"] == approx(100.0 + 200.0 + 800.0)
    assert quarter["pipeline_due_weighted"] == approx(0.5 * 1100)
    assert kpis(doc, "week", 0)["pipeline_due_amount"] == 0.0  # [05-18, 05-25): none
    assert kpis(doc, "month", 1)["pipeline_deals"] == 0  # created in May: not open at 05-01


def test_decision_22_a_reopened_won_deal_counts_as_revenue_and_as_pipeline():
    events = [
        created(1, d("05-01"), "D", amount=1000, stage="nego", expected_close_at=d("05-28")),
        closed(2, d("05-10"), "D", "won", amount=1000),
        updated(3, d("05-12"), "D", stage="nego"),  # a correction re-opens it
        closed(4, d("05-15"), "D", "won", amount=1100),
    ]
    before = kpis(report(events, as_of=d("05-14")), "month", 0)
    assert (before["deals_won"], before["revenue_won"]) == (1, 1000.0)  # close e002 counts
    assert (before["pipeline_deals"], before["pipeline_amount"]) == (1, 1000.0)  # ... and open
    assert before["pipeline_due_amount"] == 1000.0  # expected close 05-28 kept
    assert before["forecast_commit"] == approx(1000 + 1000)  # held twice
    assert before["forecast_best_case"] == approx(2000.0)
    assert before["forecast_weighted"] == approx(1000 + 0.8 * 1000)
    assert before["stage_entries"] == by_stage(0, 0, 2)  # created, re-open
    assert before["avg_days_in_stage"] == approx(by_stage(None, None, 9.0))  # 05-01→05-10
    after = kpis(report(events), "month", 0)  # the re-close settles it
    assert (after["deals_won"], after["revenue_won"]) == (1, 1100.0)
    assert after["pipeline_deals"] == 0
    assert (after["forecast_commit"], after["forecast_weighted"]) == (1100.0, 1100.0)
    # stays ended in May: 9 d and 05-12→05-15 = 3 d → 6
    assert after["avg_days_in_stage"] == approx(by_stage(None, None, 6.0))


# -- stays in a stage ---------------------------------------------------------------------------

def test_stays_count_entries_where_they_happen_and_lengths_where_they_end():
    events = [
        created(1, d("04-20"), "D", amount=10, stage="disc"),
        updated(2, d("04-25"), "D", stage="prop"),      # disc 04-20→04-25 = 5 d (April)
        updated(3, d("05-05"), "D", stage="nego"),      # prop 04-25→05-05 = 10 d (May)
        closed(4, d("05-08"), "D", "won", amount=10),   # nego 05-05→05-08 = 3 d (May)
        created(11, d("04-28"), "D2", amount=20, stage="disc"),
        updated(12, d("05-02"), "D2", stage="prop"),    # disc 04-28→05-02 = 4 d (May)
        created(21, d("05-10"), "D3", amount=40, stage="prop"),
        updated(22, d("05-16 12:00"), "D3", stage="nego"),  # prop 6.5 d (May)
    ]
    doc = report(events)
    april, may = kpis(doc, "month", 1), kpis(doc, "month", 0)
    assert april["stage_entries"] == by_stage(2, 1, 0)  # D, D2 into disc; D into prop
    assert april["avg_days_in_stage"] == approx(by_stage(5.0, None, None))
    assert may["stage_entries"] == by_stage(0, 2, 2)  # prop D2, D3 · nego D, D3
    # the 10-day prop stay began in April but ends in May: it counts in May only
    assert may["avg_days_in_stage"] == approx(by_stage(4.0, (10 + 6.5) / 2, 3.0))
    quarter = kpis(doc, "quarter", 0)  # April + May
    assert quarter["stage_entries"] == by_stage(2, 3, 2)
    assert quarter["avg_days_in_stage"] == approx(by_stage((5 + 4) / 2, 8.25, 3.0))
    week = kpis(doc, "week", 0)  # [05-18, 05-25): nothing entered or ended
    assert (week["stage_entries"], week["avg_days_in_stage"]) == (by_stage(0, 0, 0), NO_STAYS)


def test_stay_flows_count_for_the_scope_after_the_event():
    events = [
        created(1, d("05-01"), "D", team="t1", rep="a", amount=50, stage="disc"),
        # owner change and stage change in one event: entry prop and the 5-day disc stay's
        # end both count for t2/b, the owner after the event
        updated(2, d("05-06"), "D", stage="prop", team_id="t2", rep_id="b"),
    ]
    doc = report(events)
    t1, t2 = kpis(doc, "month", 0, team="t1"), kpis(doc, "month", 0, team="t2")
    assert (t1["stage_entries"], t1["avg_days_in_stage"]) == (by_stage(1, 0, 0), NO_STAYS)
    assert t2["stage_entries"] == by_stage(0, 1, 0)
    assert t2["avg_days_in_stage"] == approx(by_stage(5.0, None, None))
    a, b = kpis(doc, "month", 0, rep="a"), kpis(doc, "month", 0, rep="b")
    assert (a["stage_entries"], a["avg_days_in_stage"]) == (by_stage(1, 0, 0), NO_STAYS)
    assert (b["stage_entries"], b["avg_days_in_stage"]) == (by_stage(0, 1, 0),
                                                            by_stage(5.0, None, None))
    # the point-in-time pipeline follows the owner at as_of; v1 creation stays with t1/a
    assert (t1["pipeline_deals"], t2["pipeline_deals"]) == (0, 1)
    assert (t1["deals_created"], t2["deals_created"]) == (1, 0)


def test_a_close_ends_the_stay_and_a_second_close_ends_nothing():
    events = [
        created(1, d("05-01"), "D", amount=100, stage="nego"),
        closed(2, d("05-04 12:00"), "D", "lost"),  # nego stay 3.5 d ends
        closed(3, d("05-06"), "D", "lost"),        # already closed: no stay to end
        created(11, d("05-01"), "N", amount=10),   # no stage: its close ends nothing
        closed(12, d("05-03"), "N", "lost"),
    ]
    may = kpis(report(events), "month", 0)
    assert may["stage_entries"] == by_stage(0, 0, 1)
    assert may["avg_days_in_stage"] == approx(by_stage(None, None, 3.5))
    assert may["pipeline_deals"] == 0
    assert may["deals_lost"] == 2


def test_a_deal_with_only_closes_is_never_open():
    events = [
        closed(1, d("04-10"), "Q", "lost", amount=70),
        closed(2, d("05-05"), "D", "won", amount=100),
        closed(3, d("05-07"), "D", "lost"),
    ]
    for as_of in (d("05-06"), AS_OF):  # between D's closes, and after them
        doc = report(events, as_of=as_of)
        for offset in (0, 1):
            k = kpis(doc, "month", offset)
            assert (k["pipeline_deals"], k["pipeline_amount"]) == (0, 0.0)
            assert (k["stage_entries"], k["avg_days_in_stage"]) == (by_stage(0, 0, 0),
                                                                    NO_STAYS)
    between = kpis(report(events, as_of=d("05-06")), "month", 0)
    assert (between["deals_won"], between["revenue_won"]) == (1, 100.0)
    assert between["forecast_weighted"] == 100.0  # revenue only
    may = kpis(report(events), "month", 0)
    assert (may["deals_won"], may["deals_lost"], may["revenue_won"]) == (0, 1, 0.0)


def test_stage_flows_on_the_as_of_day_count_only_before_as_of():
    events = [
        created(1, d("05-20 06:00"), "D", amount=10, stage="disc"),
        updated(2, d("05-20 09:00"), "D", stage="prop"),   # disc stay 3 h = 0.125 d
        updated(3, d("05-20 18:00"), "D", stage="nego"),   # after as_of: not visible
    ]
    today = kpis(report(events, as_of=d("05-20 12:00")), "day", 0)
    assert today["stage_entries"] == by_stage(1, 1, 0)
    assert today["avg_days_in_stage"] == approx(by_stage(0.125, None, None))
    assert today["pipeline_deals_by_stage"] == by_stage(0, 1, 0)
    later = kpis(report(events, as_of=d("05-21")), "day", 1)  # the whole day, seen later
    assert later["stage_entries"] == by_stage(1, 1, 1)
    assert later["avg_days_in_stage"] == approx(by_stage(0.125, 0.375, None))  # prop 9 h


# -- the point-in-time pipeline -----------------------------------------------------------------

def test_pipeline_is_taken_at_as_of_in_offset_0_and_at_the_end_of_past_windows():
    events = [
        created(1, d("04-10"), "D1", amount=100, stage="disc"),
        updated(2, d("05-01"), "D1", amount=150, stage="prop"),  # at April's end: not in April
        created(11, d("04-15"), "D2", amount=200, stage="prop"),
        closed(12, d("05-03"), "D2", "lost"),
        created(21, d("05-10"), "D3", amount=400, stage="nego"),
        created(31, AS_OF, "D4", amount=999, stage="nego"),  # at as_of: not visible
    ]
    doc = report(events)
    assert doc["events"]["counted"] == 5 and doc["events"]["not_visible"] == 1
    april = kpis(doc, "month", 1)  # at 05-01T00:00Z: D1 disc 100, D2 prop 200
    assert april["pipeline_deals"] == 2
    assert april["pipeline_amount"] == approx(300.0)
    assert april["pipeline_deals_by_stage"] == by_stage(1, 1, 0)
    assert april["pipeline_weighted"] == approx(0.1 * 100 + 0.5 * 200)  # 110
    assert april["pipeline_amount_by_category"] == approx(
        {"pipeline": 100.0, "best_case": 200.0, "commit": 0.0})
    assert kpis(doc, "month", 1, team="t")["pipeline_deals"] == 2
    may = kpis(doc, "month", 0)  # at as_of: D1 prop 150, D3 nego 400 (D2 closed)
    assert may["pipeline_deals"] == 2
    assert may["pipeline_amount"] == approx(550.0)
    assert may["pipeline_amount_by_stage"] == approx(by_stage(0.0, 150.0, 400.0))
    assert may["pipeline_weighted"] == approx(0.5 * 150 + 0.8 * 400)  # 395
    assert may["pipeline_amount_by_category"] == approx(
        {"pipeline": 0.0, "best_case": 150.0, "commit": 400.0})
    yesterday = kpis(doc, "day", 1)  # ends at as_of: the same instant as May's
    assert (yesterday["pipeline_deals"], yesterday["pipeline_amount"]) == (2, approx(550.0))
    for period, offset in (("month", 12), ("quarter", 1), ("year", 1)):  # nothing open then
        k = kpis(doc, period, offset)
        assert (k["pipeline_deals"], k["pipeline_amount"], k["pipeline_weighted"]) == (
            0, 0.0, 0.0)


def test_pipeline_properties_are_those_at_the_instant():
    events = [
        created(1, d("04-05"), "D", team="t1", rep="a", amount=100, stage="prop",
                expected_close_at=d("04-28")),
        # a later change of amount, owner and close date is not visible at April's end
        updated(2, d("05-03"), "D", amount=500, team_id="t2", rep_id="b",
                expected_close_at=d("05-19")),
    ]
    doc = report(events)
    april = {s: kpis(doc, "month", 1, team=s) for s in ("t1", "t2")}
    assert (april["t1"]["pipeline_amount"], april["t2"]["pipeline_amount"]) == (100.0, 0.0)
    assert april["t1"]["pipeline_due_amount"] == 100.0  # 04-28 is in April
    assert april["t1"]["pipeline_due_weighted"] == approx(50.0)
    assert kpis(doc, "month", 1, rep="a")["pipeline_deals"] == 1
    may = {s: kpis(doc, "month", 0, team=s) for s in ("t1", "t2")}
    assert (may["t1"]["pipeline_amount"], may["t2"]["pipeline_amount"]) == (0.0, 500.0)
    assert may["t2"]["pipeline_due_amount"] == 500.0  # 05-19 is in May (and overdue)
    assert kpis(doc, "month", 0, rep="b")["pipeline_deals"] == 1


def test_null_amount_counts_zero():
    events = [
        created(1, d("05-02"), "D", stage="disc", expected_close_at=d("05-25")),  # no amount
        created(2, d("05-02"), "E", amount=40, stage="prop"),
        created(3, d("05-02"), "F", amount=30, stage="nego"),
        updated(4, d("05-04"), "F", amount=None),  # null: ignored (decision 1), stays 30
    ]
    may = kpis(report(events), "month", 0)
    assert may["pipeline_deals"] == 3
    assert may["pipeline_amount"] == approx(70.0)
    assert may["pipeline_deals_by_stage"] == by_stage(1, 1, 1)
    assert may["pipeline_amount_by_stage"] == approx(by_stage(0.0, 40.0, 30.0))
    assert may["pipeline_weighted"] == approx(0.1 * 0 + 0.5 * 40 + 0.8 * 30)  # 44
    assert (may["pipeline_due_amount"], may["pipeline_due_weighted"]) == (0.0, 0.0)  # D: 0


def test_null_stage_counts_in_the_totals_and_under_pipeline_only():
    events = [
        created(1, d("05-02"), "N", amount=70, expected_close_at=d("05-25")),  # no stage
        created(2, d("05-02"), "C", amount=30, stage="nego", expected_close_at=d("05-26")),
        created(3, d("05-02"), "B", amount=5, stage="disc"),
    ]
    may = kpis(report(events), "month", 0)
    assert may["pipeline_deals"] == 3
    assert may["pipeline_amount"] == approx(105.0)
    assert may["pipeline_deals_by_stage"] == by_stage(1, 0, 1)  # N is in no stage
    assert may["pipeline_amount_by_stage"] == approx(by_stage(5.0, 0.0, 30.0))
    assert may["pipeline_amount_by_category"] == approx(
        {"pipeline": 70.0 + 5.0, "best_case": 0.0, "commit": 30.0})
    assert may["pipeline_weighted"] == approx(0.8 * 30 + 0.1 * 5)  # N weighs 0: 24.5
    assert may["pipeline_due_amount"] == approx(100.0)  # N, C (B has no close date)
    assert may["pipeline_due_weighted"] == approx(24.0)
    assert may["forecast_commit"] == approx(30.0)  # N is not commit ...
    assert may["forecast_best_case"] == approx(30.0)  # ... nor best case
    assert may["stage_entries"] == by_stage(1, 0, 1)


def test_weighted_amounts_use_each_stage_probability():
    events = [
        created(1, d("05-02"), "A", amount=100, stage="disc", expected_close_at=d("05-21")),
        created(2, d("05-02"), "B", amount=300, stage="disc"),
        created(3, d("05-02"), "C", amount=200, stage="prop", expected_close_at=d("05-22")),
        created(4, d("05-02"), "D", amount=50, stage="nego", expected_close_at=d("06-02")),
    ]
    may = kpis(report(events), "month", 0)
    assert may["pipeline_weighted"] == approx(0.1 * 400 + 0.5 * 200 + 0.8 * 50)  # 180
    assert may["pipeline_due_amount"] == approx(300.0)  # A, C
    assert may["pipeline_due_weighted"] == approx(0.1 * 100 + 0.5 * 200)  # 110
    assert may["forecast_weighted"] == approx(110.0)  # no revenue yet
    assert may["forecast_commit"] == 0.0 and may["forecast_best_case"] == approx(200.0)


def test_forecast_fields_only_in_offset_0_windows():
    events = [
        created(1, d("05-02"), "D", amount=100, stage="nego", expected_close_at=d("05-25")),
        closed(2, d("05-03"), "W", "won", amount=10),
    ]
    doc = report(events)
    forecast = ("forecast_commit", "forecast_best_case", "forecast_weighted")
    for w in doc["windows"]:
        scopes = [w["company"], *w["teams"].values(), *w["reps"].values()]
        for scope in scopes:
            k = scope["kpis"]
            assert isinstance(k["pipeline_amount"], float)
            if w["offset"] != 0:
                assert [k[f] for f in forecast] == [None] * 3, (w["period"], w["offset"])
            else:
                assert all(isinstance(k[f], float) for f in forecast)
    # revenue 10 + due commit 100 (D due in May); weighted 10 + 0.8 × 100
    may = kpis(doc, "month", 0)
    assert [may[f] for f in forecast] == approx([110.0, 110.0, 90.0])
    assert [kpis(doc, "year", 0)[f] for f in forecast] == approx([110.0, 110.0, 90.0])
    # week 0 ends at 05-25T00:00Z exactly: D is not due there; no revenue in the week
    assert [kpis(doc, "week", 0)[f] for f in forecast] == [0.0, 0.0, 0.0]


# -- pacing on targets (§7.5) -------------------------------------------------------------------

def test_pacing_at_a_window_start_f_0():
    config = make_config(targets=[
        {"kpi": "revenue_won", "period": "month", "value": 1000},
        {"kpi": "deals_created", "period": "month", "value": 10},
    ])
    events = [
        created(1, d("04-20"), "P", amount=500, stage="nego", expected_close_at=d("05-15")),
        created(2, d("04-02"), "W", amount=300),
        closed(3, d("04-10"), "W", "won", amount=300),
    ]
    doc = report(events, as_of=d("05-01"), config=config)
    may = targets(doc, "month", 0)  # f = 0: as_of is May's first instant
    assert may["revenue_won"] == approx({
        "target": 1000.0, "attainment": 0.0,
        "expected": 0.0,      # 1000 × 0
        "pace": None,         # expected 0
        "projection": None,   # f 0
        "coverage": 0.5,      # due 500 (P) / remaining (1000 − 0)
        "forecast_attainment": 0.4,  # (0 + 0.8 × 500) / 1000
    })
    assert may["deals_created"] == approx({
        "target": 10.0, "attainment": 0.0, "expected": 0.0, "pace": None,
        "projection": None, "coverage": None, "forecast_attainment": None})


def test_pacing_in_a_running_and_a_finished_window():
    config = make_config(targets=[
        {"kpi": "revenue_won", "period": "month", "value": 3100},
        {"kpi": "leads_created", "period": "month", "value": 31},
    ])
    events = [closed(1, d("04-12"), "A", "won", amount=1240),
              closed(2, d("05-03"), "B", "won", amount=600),
              closed(3, d("05-11"), "C", "won", amount=350)]
    events += [ev(10 + i, "lead.created", d(f"05-{i + 1:02d}"), lead_id=f"L{i}", team_id="t",
                  rep_id="a") for i in range(10)]
    doc = report(events, config=config)
    # May: f = 19 days / 31 days
    may = targets(doc, "month", 0)
    assert may["revenue_won"] == approx({
        "target": 3100.0, "attainment": 950 / 3100,
        "expected": 1900.0,             # 3100 × 19/31
        "pace": 0.5,                    # 950 / 1900
        "projection": 1550.0,           # 950 / (19/31)
        "coverage": 0.0,                # due 0 / remaining 2150
        "forecast_attainment": 950 / 3100,  # (950 + 0) / 3100
    })
    assert may["leads_created"] == approx({
        "target": 31.0, "attainment": 10 / 31, "expected": 19.0, "pace": 10 / 19,
        "projection": 10 * 31 / 19, "coverage": None, "forecast_attainment": None})
    # April is over: f = 1
    april = targets(doc, "month", 1)
    assert april["revenue_won"] == approx({
        "target": 3100.0, "attainment": 0.4, "expected": 3100.0, "pace": 0.4,
        "projection": 1240.0, "coverage": None, "forecast_attainment": None})
    assert april["leads_created"] == approx({
        "target": 31.0, "attainment": 0.0, "expected": 31.0, "pace": 0.0,
        "projection": 0.0, "coverage": None, "forecast_attainment": None})


def test_coverage_is_null_when_nothing_remains():
    config = make_config(targets=[
        {"kpi": "revenue_won", "period": "month", "value": 1000},              # remaining −200
        {"kpi": "revenue_won", "period": "month", "value": 1200, "team": "t"},  # remaining 0
        {"kpi": "revenue_won", "period": "month", "value": 1300, "rep": "a"},   # remaining 100
    ])
    events = [
        closed(1, d("05-05"), "W", "won", amount=1200),
        created(2, d("05-06"), "P", amount=400, stage="prop", expected_close_at=d("05-28")),
    ]
    doc = report(events, config=config)
    # forecast_weighted = 1200 + 0.5 × 400 = 1400 in every scope
    company = targets(doc, "month", 0)["revenue_won"]
    assert (company["coverage"], company["forecast_attainment"]) == (None, approx(1.4))
    team = targets(doc, "month", 0, team="t")["revenue_won"]
    assert (team["coverage"], team["forecast_attainment"]) == (None, approx(1400 / 1200))
    assert team["attainment"] == 1.0
    rep = targets(doc, "month", 0, rep="a")["revenue_won"]
    assert rep["coverage"] == approx(4.0)  # due 400 / remaining 100
    assert rep["forecast_attainment"] == approx(1400 / 1300)


def test_target_of_zero():
    config = make_config(targets=[
        {"kpi": "revenue_won", "period": "month", "value": 0},
        {"kpi": "deals_won", "period": "month", "value": 0, "team": "t"},
    ])
    events = [
        closed(1, d("05-05"), "W", "won", amount=250),
        created(2, d("05-06"), "P", amount=400, stage="prop", expected_close_at=d("05-28")),
    ]
    doc = report(events, config=config)
    assert targets(doc, "month", 0)["revenue_won"] == approx({
        "target": 0.0, "attainment": None,  # target 0 (decision 10)
        "expected": 0.0, "pace": None,      # 0 × 19/31 = 0
        "projection": 250 * 31 / 19,        # the run rate does not need the target
        "coverage": None,                   # remaining 0 − 250 ≤ 0
        "forecast_attainment": None,        # target 0
    })
    assert targets(doc, "month", 0, team="t")["deals_won"] == approx({
        "target": 0.0, "attainment": None, "expected": 0.0, "pace": None,
        "projection": 31 / 19, "coverage": None, "forecast_attainment": None})


def test_non_additive_targets_have_attainment_but_no_pacing():
    config = make_config(targets=[
        {"kpi": "win_rate", "period": "month", "value": 0.5},
        {"kpi": "avg_deal_size", "period": "month", "value": 200},
        {"kpi": "pipeline_amount", "period": "month", "value": 1000},
        {"kpi": "forecast_weighted", "period": "month", "value": 2000},
    ])
    events = [
        closed(1, d("05-05"), "W", "won", amount=300),
        closed(2, d("05-06"), "L", "lost"),
        created(3, d("05-06"), "P", amount=400, stage="prop", expected_close_at=d("05-28")),
    ]
    doc = report(events, config=config)
    no_pacing = {"expected": None, "pace": None, "projection": None, "coverage": None,
                 "forecast_attainment": None}
    may = targets(doc, "month", 0)
    assert set(may) == {"win_rate", "avg_deal_size", "pipeline_amount", "forecast_weighted"}
    assert may["win_rate"] == approx({"target": 0.5, "attainment": 1.0, **no_pacing})  # 1/2
    assert may["avg_deal_size"] == approx({"target": 200.0, "attainment": 1.5, **no_pacing})
    assert may["pipeline_amount"] == approx({"target": 1000.0, "attainment": 0.4, **no_pacing})
    # forecast_weighted = 300 + 0.5 × 400 = 500
    assert may["forecast_weighted"] == approx(
        {"target": 2000.0, "attainment": 0.25, **no_pacing})
    april = targets(doc, "month", 1)  # no closes, nothing open, no forecast
    assert april["win_rate"]["attainment"] is None
    assert april["pipeline_amount"]["attainment"] == 0.0
    assert april["forecast_weighted"]["attainment"] is None
    assert all(t[f] is None for t in april.values() for f in no_pacing)


def test_coverage_and_forecast_attainment_for_revenue_won_in_offset_0_in_own_scope():
    config = make_config(targets=[
        {"kpi": "revenue_won", "period": "month", "value": 2000},
        {"kpi": "revenue_won", "period": "month", "value": 1000, "team": "t1"},
        {"kpi": "revenue_won", "period": "month", "value": 500, "rep": "a"},
        {"kpi": "deals_won", "period": "month", "value": 5},
        {"kpi": "revenue_won", "period": "quarter", "value": 6000},
    ])
    events = [
        closed(1, d("05-05"), "W1", "won", team="t1", rep="a", amount=300),
        closed(2, d("05-06"), "W2", "won", team="t1", rep="b", amount=100),
        closed(3, d("05-07"), "W3", "won", team="t2", rep="c", amount=200),
        created(11, d("05-08"), "P1", team="t1", rep="a", amount=400, stage="nego",
                expected_close_at=d("05-25")),
        created(12, d("05-08"), "P2", team="t1", rep="b", amount=600, stage="prop",
                expected_close_at=d("05-28")),
        created(13, d("05-08"), "P3", team="t2", rep="c", amount=1000, stage="disc",
                expected_close_at=d("05-30")),
        created(14, d("05-08"), "P4", team="t1", rep="a", amount=5000, stage="nego",
                expected_close_at=d("06-15")),  # not due in May; due in the quarter
    ]
    doc = report(events, config=config)
    month = targets(doc, "month", 0)
    # company: revenue 600, due 400 + 600 + 1000 = 2000, due weighted 320 + 300 + 100 = 720
    assert month["revenue_won"]["coverage"] == approx(2000 / (2000 - 600))
    assert month["revenue_won"]["forecast_attainment"] == approx((600 + 720) / 2000)
    assert (month["deals_won"]["coverage"], month["deals_won"]["forecast_attainment"]) == (
        None, None)
    # team t1: revenue 400, due P1 + P2 = 1000, due weighted 320 + 300 = 620
    t1 = targets(doc, "month", 0, team="t1")["revenue_won"]
    assert t1["coverage"] == approx(1000 / (1000 - 400))
    assert t1["forecast_attainment"] == approx((400 + 620) / 1000)
    # rep a: revenue 300, due P1 = 400, due weighted 320
    a = targets(doc, "month", 0, rep="a")["revenue_won"]
    assert a["coverage"] == approx(400 / (500 - 300))
    assert a["forecast_attainment"] == approx((300 + 320) / 500)
    assert targets(doc, "month", 0, team="t2") == {}
    assert targets(doc, "month", 0, rep="b") == {}
    # quarter 0: due P1..P4 = 7000, weighted 320 + 300 + 100 + 4000 = 4720, revenue 600
    quarter = targets(doc, "quarter", 0)["revenue_won"]
    assert quarter["coverage"] == approx(7000 / (6000 - 600))
    assert quarter["forecast_attainment"] == approx((600 + 4720) / 6000)
    # other offsets: none
    for period, offset, scopes in (("month", 1, 3), ("month", 12, 3), ("quarter", 1, 1),
                                   ("quarter", 4, 1)):
        for scope in ({}, {"team": "t1"}, {"rep": "a"})[:scopes]:
            entry = targets(doc, period, offset, **scope)["revenue_won"]
            assert (entry["coverage"], entry["forecast_attainment"]) == (None, None)
            assert entry["expected"] is not None  # pacing itself is there


# -- expected close at window bounds across DST -------------------------------------------------

def test_expected_close_at_window_start_is_due_and_at_its_end_not_across_spring_dst():
    # Berlin, March 2026: [03-01T00:00+01:00, 04-01T00:00+02:00) = [02-28T23Z, 03-31T22Z),
    # 31 days − 1 hour = 743 h (clocks go forward on 03-29).
    config = make_config(timezone="Europe/Berlin", targets=[
        {"kpi": "revenue_won", "period": "month", "value": 743}])
    closes = {  # amount: expected_close_at
        100: "2026-03-01T00:00:00+01:00",   # the month's start: due
        200: "2026-04-01T00:00:00+02:00",   # the month's end: not due
        400: "2026-03-31T23:59:59+02:00",   # its last second: due
        800: "2026-04-01T00:00:00+01:00",   # 03-31T23:00Z, an hour after the end: not due
        1600: "2026-02-28T23:00:00Z",        # the start written in UTC: due
        3200: "2026-02-28T22:59:59Z",        # a second before the start: due in February
    }
    events = [created(i, "2026-02-15T10:00:00+01:00", f"D{amount}", amount=amount,
                      stage="prop", expected_close_at=close)
              for i, (amount, close) in enumerate(closes.items(), start=1)]
    events.append(closed(9, "2026-03-10T12:00:00+01:00", "W", "won", amount=234))
    doc = report(events, as_of="2026-03-20T12:00:00+01:00", config=config)
    march = window(doc, "month", 0)
    assert (march["start"], march["end"]) == ("2026-03-01T00:00:00+01:00",
                                              "2026-04-01T00:00:00+02:00")
    k = march["company"]["kpis"]
    assert k["pipeline_due_amount"] == approx(100.0 + 400 + 1600)  # 2100
    assert k["pipeline_due_weighted"] == approx(1050.0)
    feb = kpis(doc, "month", 1)  # open at its end too; only the 3200 is due in February
    assert feb["pipeline_deals"] == 6 and feb["pipeline_due_amount"] == approx(3200.0)
    assert kpis(doc, "quarter", 0)["pipeline_due_amount"] == approx(100.0 + 400 + 1600 + 3200)
    # f in absolute time: 03-01T00:00+01 → 03-20T12:00+01 = 468 h of 743 h
    assert march["company"]["targets"]["revenue_won"] == approx({
        "target": 743.0, "attainment": 234 / 743,
        "expected": 468.0,                 # 743 × 468/743
        "pace": 0.5,                       # 234 / 468
        "projection": 371.5,               # 234 / (468/743)
        "coverage": 2100 / (743 - 234),
        "forecast_attainment": (234 + 1050) / 743,
    })


def test_expected_close_at_window_start_is_due_and_at_its_end_not_across_autumn_dst():
    # Berlin, October 2026: [10-01T00:00+02:00, 11-01T00:00+01:00) (clocks go back 10-25).
    config = make_config(timezone="Europe/Berlin")
    events = [
        created(1, "2026-09-15T10:00:00+02:00", "X", amount=100, stage="prop",
                expected_close_at="2026-10-01T00:00:00+02:00"),  # October's start
        created(2, "2026-09-15T10:00:00+02:00", "Y", amount=200, stage="prop",
                expected_close_at="2026-11-01T00:00:00+01:00"),  # October's end = Nov start
        # 10-31T22:00Z = 10-31T23:00+01:00: inside October although its text says November
        created(3, "2026-09-15T10:00:00+02:00", "Z", amount=400, stage="prop",
                expected_close_at="2026-11-01T00:00:00+02:00"),
    ]
    doc = report(events, as_of="2026-11-10T12:00:00+01:00", config=config)
    october = window(doc, "month", 1)
    assert (october["start"], october["end"]) == ("2026-10-01T00:00:00+02:00",
                                                  "2026-11-01T00:00:00+01:00")
    k = october["company"]["kpis"]
    assert k["pipeline_due_amount"] == approx(100.0 + 400)  # X, Z
    assert k["pipeline_due_weighted"] == approx(250.0)
    assert k["forecast_weighted"] is None  # offset 1
    november = kpis(doc, "month", 0)
    assert november["pipeline_due_amount"] == approx(200.0)  # Y, at November's start
    assert november["forecast_best_case"] == approx(200.0)
    assert kpis(doc, "quarter", 0)["pipeline_due_amount"] == approx(700.0)  # Oct–Dec


# -- no stages configured -----------------------------------------------------------------------

def test_without_stages_stage_is_ignored_and_stage_keyed_kpis_are_empty():
    config = make_config(stages=())
    events = [
        created(1, d("05-02"), "D", amount=100, stage="discovery", expected_close_at=d("05-25")),
        updated(2, d("05-04"), "D", stage="anything", amount=120),
        created(3, d("05-03"), "E", amount=50, stage="x", expected_close_at=d("06-10")),
        closed(4, d("05-05"), "G", "won", amount=30),
    ]
    doc = report(events, config=config)  # every event decodes: stage is an extra field
    assert doc["events"]["counted"] == 4
    may = kpis(doc, "month", 0)
    assert (may["pipeline_deals"], may["pipeline_amount"]) == (2, approx(170.0))
    for breakdown in ("pipeline_deals_by_stage", "pipeline_amount_by_stage", "stage_entries",
                      "avg_days_in_stage"):
        assert may[breakdown] == {}, breakdown
    assert may["pipeline_amount_by_category"] == approx(
        {"pipeline": 170.0, "best_case": 0.0, "commit": 0.0})
    assert (may["pipeline_weighted"], may["pipeline_due_weighted"]) == (0.0, 0.0)
    assert may["pipeline_due_amount"] == approx(120.0)  # D: 05-25
    # no commit or best case without stages: the forecast is revenue alone
    assert (may["forecast_commit"], may["forecast_best_case"],
            may["forecast_weighted"]) == (30.0, 30.0, 30.0)
    # with stages configured the same "anything" is an invalid stage
    rejected = Decoder(UTC)(json.dumps(events[1]).encode())
    assert isinstance(rejected, Rejection) and rejected.reason == "invalid_field"
