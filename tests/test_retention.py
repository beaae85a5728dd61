"""Retention forgets old state without changing any reported number (SPEC §1.3)."""

from __future__ import annotations

from datetime import datetime, timezone

from engine.calendar import Calendar, to_micros
from engine.config import config_from_mapping
from engine.core import Core
from engine.decode import decode
from engine.event import MICRO
from engine.tooling.generator import GeneratorSettings, history_lines
from engine.report import build_report
from engine.retention import bucket_key_expired, evict

CONFIG = config_from_mapping({
    "calendar": {"timezone": "America/New_York", "fiscal_year_start_month": 2},
    "money": {"currency": "USD"},
})
START = datetime(2023, 1, 1, tzinfo=timezone.utc)
END = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _core() -> Core:
    settings = GeneratorSettings(seed=11, teams=2, reps_per_team=3,
                                 timezone="America/New_York", currency="USD", scale=0.3)
    core = Core(Calendar(CONFIG.calendar))
    for raw in history_lines(settings, START, END):
        event = decode(raw, currency="USD", max_event_bytes=1 << 20)
        core.apply(event)
    return core


def test_eviction_keeps_every_reported_number_and_drops_old_state():
    as_of = to_micros(END)
    horizon = as_of - 800 * 86_400 * MICRO
    full, evicted = _core(), _core()
    before = (len(evicted.seen), len(evicted.leads), len(evicted.deals), len(evicted.days))
    dropped = evict(evicted, horizon)
    after = (len(evicted.seen), len(evicted.leads), len(evicted.deals), len(evicted.days))
    assert all(a < b for a, b in zip(after, before)), (before, after)
    assert dropped and all(key[:2] in ("L|", "D|", "C|") for key in dropped)
    report_full = build_report([full], as_of, CONFIG)
    report_evicted = build_report([evicted], as_of, CONFIG)
    # old events are no longer in the state, so only the counts of events differ
    assert report_evicted["events"]["counted"] < report_full["events"]["counted"]
    report_full.pop("events"), report_evicted.pop("events")
    assert report_evicted == report_full


def test_customers_still_subscribed_are_kept_however_old():
    core = _core()
    horizon = to_micros(END) - 800 * 86_400 * MICRO
    running = {cid for cid, c in core.customers.items()
               if any(s.start_ts is not None and s.start_ts < horizon and s.ended_at() is None
                      for s in c.subscriptions.values())}
    assert running, "the generated history should have long-running subscriptions"
    evict(core, horizon)
    assert running <= set(core.customers)


def test_activity_and_spend_records_expire_by_their_utc_day():
    horizon = to_micros(datetime(2026, 1, 10, tzinfo=timezone.utc))
    day = (horizon // (86_400 * MICRO))
    assert bucket_key_expired(f"A|rep-1|{day - 1}", horizon)
    assert not bucket_key_expired(f"A|rep-1|{day}", horizon)
    assert bucket_key_expired(f"S|marketing|{day - 30}", horizon)
    assert not bucket_key_expired("L|lead-1", horizon)
    assert not bucket_key_expired(f"C|{day - 999}", horizon)


def test_eviction_is_idempotent():
    core = _core()
    as_of = to_micros(END)
    horizon = as_of - 800 * 86_400 * MICRO
    evict(core, horizon)
    report_before = build_report([core], as_of, CONFIG)
    assert evict(core, horizon) == []
    assert build_report([core], as_of, CONFIG) == report_before
    assert min(core.days) >= core.calendar.local_day(horizon)


def test_deals_still_open_are_kept_however_old():
    """An open deal is in the pipeline at every later instant (SPEC §7.3): eviction keeps it,
    while a closed deal as old is forgotten; the pipeline figures do not change."""
    from engine.event import Event

    staged = config_from_mapping({
        "calendar": {"timezone": "America/New_York"}, "money": {"currency": "USD"},
        "pipeline": {"stages": [{"id": "proposal", "probability": 0.5, "category": "commit"}]}})
    core = Core(Calendar(staged.calendar), staged.pipeline)
    old = to_micros(datetime(2023, 2, 1, tzinfo=timezone.utc))
    core.apply(Event("o1", "deal.created", old, "t", "r", deal_id="OPEN", amount=5 * MICRO,
                     stage="proposal"))
    core.apply(Event("c1", "deal.created", old, "t", "r", deal_id="SHUT", amount=7 * MICRO,
                     stage="proposal"))
    core.apply(Event("c2", "deal.closed", old + MICRO, "t", "r", deal_id="SHUT",
                     outcome="lost"))
    as_of = to_micros(END)
    before = build_report([core], as_of, staged)
    dropped = evict(core, as_of - 800 * 86_400 * MICRO)
    assert dropped == ["D|SHUT"] and set(core.deals) == {"OPEN"}
    after = build_report([core], as_of, staged)
    month = next(w for w in after["windows"] if w["period"] == "month" and w["offset"] == 0)
    assert month["company"]["kpis"]["pipeline_amount"] == 5.0
    assert month["company"]["kpis"]["pipeline_weighted"] == 2.5
    before.pop("events"), after.pop("events")
    assert after == before
