"""Synthetic CRM traffic: a small, seeded model of a sales organisation that emits SPEC §1 events.

Why a model and not random rows: KPIs only look plausible on data whose events relate the way a
CRM's do. A lead is created, some leads are qualified days later (often by another rep of the
same team), some qualified leads become deals, deals close won or lost weeks later, won
customers start subscriptions that may be cancelled and sometimes come back, and reps log calls,
emails, meetings and demos against the leads and deals they work on during local office hours.
Spend arrives daily and weekly. A few deliberate oddities mirror real exports: deals reopened and
closed again, closes whose ``deal.created`` never reached the stream, and inbound leads not yet
routed to a rep.

With pipeline stages configured (``stages``, SPEC §7) the traffic is v2: deals are created with a
``stage`` and an ``expected_close_at`` (a local midnight), and ``deal.updated`` events record
what a CRM records while a deal is open — stage moves (mostly forward, sometimes back), amount
changes, close dates pushed out when they pass (slips) or pulled in, owner changes — and re-opens
after a close (:mod:`engine.tooling.deal_lifecycle` plans them). Deals still open at the end stay
open. Without stages the output is exactly the v1 traffic of the same seed: the pipeline draws
from an RNG of its own, which v1 never touches.

How it runs: a discrete-event simulation over local calendar days. Each day's new work (leads,
activities, spend) and the follow-ups scheduled by earlier events go into a heap and come out in
event-time order, so the history streams in constant memory (open items only). Everything random
comes from RNGs seeded by ``seed``: the same settings give the same bytes. Event ids are a keyed
permutation of a counter, so they look random yet can never collide.

Two modes:

- :func:`history_lines` — every event in ``[start, end)``, in event-time order.
- :func:`live_lines` — an endless stream paced at ``rate`` events per second whose timestamps are
  the wall clock. The business runs compressed: the model's calendar is mapped onto the wall
  clock by one linear function (so a deal's ``opened_at`` and its ``deal.created`` agree), with
  office hours and weekends flattened so that the rate stays steady; 30 simulated days run
  unseen first so that the pipeline is full from the first second.

Noise for demos (own RNG, so the valid events are the same with or without it): ``duplicates``
re-emits a fraction of lines verbatim a little later (redeliveries), ``invalid`` injects malformed
messages of the SPEC §1.3 kinds (except ``too_large``, which would bloat files).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

import orjson

from engine.config import Config
from engine.tooling.deal_lifecycle import MIN_AMOUNT, Change, DealPlan, plan_deal, plan_reopen

__all__ = [
    "EVENTS_PER_REP_DAY",
    "GeneratorSettings",
    "expected_events",
    "history_events",
    "history_lines",
    "live_lines",
    "scale_for_events",
    "settings_for",
    "team_names",
]

TEAM_NAMES = ("dach", "nordics", "benelux", "france", "uk-ireland", "iberia", "italy", "cee",
              "mea", "anz", "japan", "latam")

# Volumes per rep, at scale 1 (tuned so that 60 reps make ~1,400 events a day, half activities).
LEADS_PER_REP_WORKDAY = 7.8
WEEKEND_LEAD_FACTOR = 0.2           # inbound web leads keep trickling in at weekends
ACTIVITIES_PER_REP_WORKDAY = 16.0
EXPANSIONS_PER_REP_WORKDAY = 0.13   # deals with existing customers, without a lead
SELF_SERVE_PER_REP_DAY = 0.15       # customers who subscribe without talking to sales
EVENTS_PER_REP_DAY = 22.9           # what all of the above add up to, averaged over two years
PIPELINE_EVENT_FACTOR = 1.09        # v2: deal.updated events on top (five stages: 8 % of all)

SOURCES = {"inbound": 40, "outbound": 25, "referral": 10, "event": 10, "partner": 15}
QUALIFY_RATE = {"inbound": 0.35, "outbound": 0.25, "referral": 0.6, "event": 0.4, "partner": 0.5}
WIN_RATE = {"inbound": 0.28, "outbound": 0.2, "referral": 0.42, "event": 0.25, "partner": 0.33,
            "expansion": 0.55}
DEAL_RATE = 0.5                     # of qualified leads
REOPEN_RATE = 0.03                  # of first closes: reopened and closed again later
UNSEEN_DEAL_RATE = 0.02             # deals whose deal.created is missing from the stream
STAGELESS_DEAL_RATE = 0.03          # v2: deals created without a stage (imports, integrations)
UNDATED_DEAL_RATE = 0.08            # v2: deals created without an expected close date
MONTHLY_CHURN = {"sales": 0.02, "self_serve": 0.05}
RETURN_RATE = 0.2                   # of cancelled customers who subscribe again later
MARKETING_PER_LEAD = 110.0          # paid media, booked daily
SALES_COST_PER_REP_WEEK = 3500.0    # salaries and commissions, booked weekly per team
UTC_STAMP_RATE = 0.1                # CRM events written by integrations that use "Z"

ACTIVITY_TYPES = {"email": 40, "call": 30, "meeting": 15, "demo": 7, "other": 8}
WORKDAY_START_S, WORKDAY_END_S = 8 * 3600, 18 * 3600
LIVE_WARMUP_DAYS = 30

_DAY_S = 86_400
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True, slots=True)
class GeneratorSettings:
    """What shapes the traffic; the same settings and seed give the same bytes."""

    seed: int = 1
    teams: int = 5
    reps_per_team: int = 12
    timezone: str = "UTC"
    currency: str = "USD"
    scale: float = 1.0          # multiplies every volume; 1.0 ≈ EVENTS_PER_REP_DAY per rep-day
    annual_growth: float = 0.25  # history volumes grow by this much a year (1.0 = doubling)
    duplicates: float = 0.0     # fraction of lines re-emitted verbatim a little later
    invalid: float = 0.0        # fraction of extra, invalid messages
    id_prefix: str = ""         # prepended to every event and entity id (a second, live stream)
    stages: tuple[str, ...] = ()  # pipeline stage ids in pipeline order; none: v1 traffic

    @property
    def reps(self) -> int:
        return self.teams * self.reps_per_team


def settings_for(config: Config, **choices: object) -> GeneratorSettings:
    """Settings whose events are valid for the engine run with ``config``: its time zone,
    reporting currency and pipeline stages (in pipeline order; none: v1 traffic), plus
    ``choices`` (seed, teams, noise, …)."""
    stages = tuple(stage.id for stage in config.pipeline.stages)
    return GeneratorSettings(timezone=config.calendar.timezone, currency=config.money.currency,
                             stages=stages, **choices)  # type: ignore[arg-type]


def team_names(count: int) -> list[str]:
    """Region-style team ids (``dach``, ``nordics``, …), then ``team-13``, ``team-14``, …"""
    return [TEAM_NAMES[i] if i < len(TEAM_NAMES) else f"team-{i + 1:02d}" for i in range(count)]


def scale_for_events(settings: GeneratorSettings, start: datetime, end: datetime,
                     events: int) -> float:
    """The ``scale`` at which a history over ``[start, end)`` has roughly ``events`` events."""
    days = max((end - start).total_seconds() / _DAY_S, 1 / 24)
    return events / (_events_per_rep_day(settings) * settings.reps * days)


def expected_events(settings: GeneratorSettings, start: datetime, end: datetime) -> int:
    """Roughly how many events a history over ``[start, end)`` has (the inverse of
    :func:`scale_for_events`)."""
    days = max((end - start).total_seconds() / _DAY_S, 1 / 24)
    return round(settings.scale * _events_per_rep_day(settings) * settings.reps * days)


def _events_per_rep_day(settings: GeneratorSettings) -> float:
    return EVENTS_PER_REP_DAY * (PIPELINE_EVENT_FACTOR if settings.stages else 1.0)


def history_events(settings: GeneratorSettings, start: datetime,
                   end: datetime) -> Iterator[dict]:
    """Every valid event with ``start ≤ occurred_at < end``, in event-time order (no noise)."""
    model = _Model(settings, flat=False)
    for _, event in model.run(start.timestamp(), end.timestamp()):
        yield event


def history_lines(settings: GeneratorSettings, start: datetime, end: datetime) -> Iterator[bytes]:
    """:func:`history_events` as JSON lines (no newline), with the settings' noise added."""
    events = history_events(settings, start, end)
    if not settings.duplicates and not settings.invalid:
        yield from map(orjson.dumps, events)
        return
    noise = _Noise(settings)
    for event in events:
        yield from noise.lines(event)
    yield from noise.flush()


def live_lines(settings: GeneratorSettings, rate: float,
               now: float | None = None) -> Iterator[tuple[float, bytes]]:
    """An endless stream of ``(due, line)``: send ``line`` at wall-clock time ``due`` (epoch s).

    ``due`` is also the line's ``occurred_at``; the caller sleeps until it, so events are stamped
    "now" and arrive ``rate`` per second on average.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    now = datetime.now(timezone.utc).timestamp() if now is None else now
    model = _Model(settings, flat=True)
    emit_from = model.clock.midnight(model.clock.day_of(now))  # sim time mapped onto `now`
    sim_per_wall_s = rate / (_events_per_rep_day(settings) * settings.reps * settings.scale
                             / _DAY_S)
    model.to_wall = lambda sim: now + (sim - emit_from) / sim_per_wall_s
    model.clock.millis = True
    noise = _Noise(settings)
    events = model.run(emit_from - LIVE_WARMUP_DAYS * _DAY_S, math.inf, emit_from)
    for sim_ts, event in events:
        due = model.to_wall(sim_ts)
        for line in noise.lines(event):
            yield due, line


# --- the model ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Rep:
    id: str
    team: str
    skill: float                 # scales win rates
    pace: float                  # scales activity volume
    recent_leads: deque = field(default_factory=lambda: deque(maxlen=40))
    recent_deals: deque = field(default_factory=lambda: deque(maxlen=20))


@dataclass(slots=True)
class _Lead:
    rep: _Rep                    # owner; shown on lead.created only once routed
    source: str
    routed: bool = True          # False: created without rep_id (inbound, not yet assigned)
    teamless: bool = False       # also without team_id
    id: str = ""


@dataclass(slots=True)
class _Deal:
    rep: _Rep
    source: str
    amount: float
    customer_id: str
    lead_id: str | None = None
    id: str = ""
    opened_at: int = 0
    closes: int = 0
    won: bool = False
    planned_won: bool = False    # v2: the first close's outcome, known when the plan is made
    stage: int | None = None     # v2: index into the stages
    close_day: int | None = None  # v2: the expected close, a local day ordinal


@dataclass(slots=True)
class _Subscription:
    customer_id: str
    mrr: float
    churn_per_day: float
    id: str = ""


class _Model:
    """The simulated sales organisation; :meth:`run` yields its events in time order."""

    def __init__(self, settings: GeneratorSettings, flat: bool) -> None:
        self.s = settings
        self.flat = flat  # live mode: every day is a workday, office hours span the whole day
        self.rng = random.Random(settings.seed)
        self.stages = settings.stages
        self.pipeline_rng = random.Random(f"{settings.seed}:pipeline")  # v1 never draws from it
        self.ids = _EventIds(settings.seed, region=0, prefix=settings.id_prefix)
        self.clock = _Clock(ZoneInfo(settings.timezone))
        self.to_wall: Callable[[float], float] | None = None  # live: model time -> wall clock
        self.planning = False
        rng = self.rng
        self.reps: list[_Rep] = []
        self.team_reps: dict[str, list[_Rep]] = {}
        for team in team_names(settings.teams):
            members = []
            for _ in range(settings.reps_per_team):
                rep = _Rep(f"rep-{len(self.reps) + 1:03d}", team,
                           skill=rng.uniform(0.7, 1.3), pace=rng.uniform(0.75, 1.25))
                members.append(rep)
                self.reps.append(rep)
            self.team_reps[team] = members
        self.customers: list[str] = []  # won customers, for expansion deals
        self.counters = {"ld": 0, "op": 0, "acc": 0, "ss": 0, "sub": 0}
        self.seq = 0
        self.heap: list[tuple] = []
        self.pending: dict[int, list[tuple]] = {}
        self.source_table = _table(SOURCES)
        self.activity_table = _table(ACTIVITY_TYPES)

    # -- the day loop

    def run(self, start: float, end: float, emit_from: float | None = None
            ) -> Iterator[tuple[int, dict]]:
        """Simulate from the day of ``start``; yield ``(ts, event)`` for ts in [emit_from, end).

        ``emit_from`` defaults to ``start``; in live mode it is later, and the days before it
        only fill the pipeline.
        """
        emit_from = start if emit_from is None else emit_from
        self.start, self.end = start, end
        clock = self.clock
        first_day = day = clock.day_of(start)
        span_days = max((end - start) / _DAY_S, 1.0) if math.isfinite(end) else 1.0
        middle_day = first_day + span_days / 2
        while clock.midnight(day) < end:
            self.day = day
            self.midnight = clock.midnight(day)
            self.next_midnight = clock.midnight(day + 1)
            heap = self.heap = self.pending.pop(day, [])
            trend = 1.0 if self.flat else (1 + self.s.annual_growth) ** ((day - middle_day) / 365)
            self.planning = True  # append now, heapify once: cheaper than a push per item
            self._plan_day(self.s.scale * trend, visible=self.next_midnight > emit_from)
            self.planning = False
            heapq.heapify(heap)
            while heap:
                ts, _, handler, subject = heapq.heappop(heap)
                event = handler(ts, subject)
                if event is not None and ts >= emit_from:
                    yield ts, event
            day += 1

    def _plan_day(self, scale: float, visible: bool) -> None:
        """Schedule the day's new work: leads, expansions, sign-ups; activities, spend if seen."""
        rng, s = self.rng, self.s
        workday = self.flat or self._weekday(self.day) < 5
        day_factor = 5 / 7 if self.flat else 1.0  # live: a week's volume spread over 7 days
        if self.flat:
            lead_rate = LEADS_PER_REP_WORKDAY * scale * (5 + 2 * WEEKEND_LEAD_FACTOR) / 7
        else:
            lead_rate = LEADS_PER_REP_WORKDAY * scale * (1.0 if workday else WEEKEND_LEAD_FACTOR)
        for rep in self.reps:
            for _ in range(_poisson(rng, lead_rate)):
                source = self.source_table[int(rng.random() * 100)] if workday else "inbound"
                lead = _Lead(rep, source)
                if source == "inbound":
                    lead.routed = rng.random() >= 0.2
                    lead.teamless = not lead.routed and rng.random() < 0.25
                    self._at(self._any_time(self.day), self._lead_created, lead)
                else:
                    self._at(self._work_time(self.day), self._lead_created, lead)
            if workday and self.customers:
                for _ in range(_poisson(rng, EXPANSIONS_PER_REP_WORKDAY * scale * day_factor)):
                    amount = _deal_amount(rng) * 0.5
                    deal = _Deal(rep, "expansion", amount, rng.choice(self.customers))
                    self._at(self._work_time(self.day), self._deal_created, deal)
            if visible and workday:
                rate = ACTIVITIES_PER_REP_WORKDAY * rep.pace * scale * day_factor
                for _ in range(_poisson(rng, rate)):
                    self._at(self._work_time(self.day), self._activity, rep)
        for _ in range(_poisson(rng, SELF_SERVE_PER_REP_DAY * s.reps * scale)):
            customer = self._next_id("ss")  # self-serve accounts have their own id range
            mrr = round(rng.choice((49, 99, 199, 299, 499)) * rng.choice((1, 1, 1, 2, 3)), 2)
            sub = _Subscription(customer, float(mrr), MONTHLY_CHURN["self_serve"] / 30)
            self._at(self._any_time(self.day), self._subscription_started, sub)
        if visible:
            self._plan_spend(scale)

    def _plan_spend(self, scale: float) -> None:
        """Marketing daily (paid media) and monthly (events, brand); sales weekly per team."""
        rng, s = self.rng, self.s
        at_six, at_nine = self.midnight + 6 * 3600, self.midnight + 9 * 3600
        leads_per_day = LEADS_PER_REP_WORKDAY * s.reps * scale * 5 / 7
        amount = leads_per_day * MARKETING_PER_LEAD * rng.uniform(0.7, 1.3)
        self._at(at_six, self._spend, ("marketing", None, amount))
        if self._weekday(self.day) == 0:
            for team, members in self.team_reps.items():
                amount = len(members) * SALES_COST_PER_REP_WEEK * scale * rng.uniform(0.8, 1.2)
                self._at(at_nine, self._spend, ("sales", team, amount))
        if date.fromordinal(self.day).day == 1:
            self._at(at_nine, self._spend, ("marketing", None,  # events, brand, content
                                            leads_per_day * 300 * rng.uniform(0.5, 1.5)))
            self._at(at_nine, self._spend, ("sales", None, s.reps * 800 * scale))  # tools

    # -- scheduling

    def _at(self, ts: int, handler: Callable[[int, object], dict | None], subject: object) -> None:
        """Run ``handler(ts, subject)`` at ``ts`` (never earlier than the event being handled).

        Work outside the simulated range is dropped: before ``start`` nothing exists yet (so
        every follow-up's cause is in the output too), after ``end`` it would never be seen.
        """
        if not self.start <= ts < self.end:
            return
        self.seq += 1
        item = (ts, self.seq, handler, subject)
        if ts < self.next_midnight:
            if self.planning:
                self.heap.append(item)
            else:
                heapq.heappush(self.heap, item)
        else:
            self.pending.setdefault(self.clock.day_of(ts), []).append(item)

    def _weekday(self, day: int) -> int:
        return (day - 1) % 7  # ordinal 1 (0001-01-01) was a Monday

    def _work_time(self, day: int) -> int:
        """A random instant in local office hours of ``day`` (any time in live mode)."""
        if self.flat:
            return self._any_time(day)
        midnight = self.midnight if day == self.day else self.clock.midnight(day)
        return midnight + WORKDAY_START_S + int(
            self.rng.random() * (WORKDAY_END_S - WORKDAY_START_S))

    def _any_time(self, day: int) -> int:
        start = self.clock.midnight(day)
        return start + int(self.rng.random() * (self.clock.midnight(day + 1) - start))

    def _office_time(self, ts: int) -> int:
        """v2: ``ts`` if it is in office hours of a workday, else a pipeline-RNG office instant
        of the next workday (of the same day, before the office opens). Live mode: ``ts``."""
        if self.flat:
            return ts
        day = self.clock.day_of(ts)
        since_midnight = ts - self.clock.midnight(day)
        if self._weekday(day) < 5 and WORKDAY_START_S <= since_midnight < WORKDAY_END_S:
            return ts
        if since_midnight >= WORKDAY_START_S or self._weekday(day) >= 5:
            day += 1
        while self._weekday(day) >= 5:
            day += 1
        return self.clock.midnight(day) + WORKDAY_START_S + int(
            self.pipeline_rng.random() * (WORKDAY_END_S - WORKDAY_START_S))

    def _close_date(self, ts: int, day: int, utc: bool) -> str:
        """RFC 3339 text of the local midnight starting ``day``, for an event at model time
        ``ts``. Live mode keeps the distance from the event in real days (the model's calendar
        runs compressed, a CRM's close dates would not), so dates stay weeks ahead of now."""
        if self.to_wall is not None:
            wall = self.to_wall(ts) + (self.clock.midnight(day) - ts)
            day = self.clock.day_of(wall)
        return self.clock.midnight_text(day, utc)

    def _workdays_later(self, days: float) -> int:
        """Office time ``days`` after today (at least tomorrow), moved off weekends."""
        day = self.day + max(1, round(days))
        while not self.flat and self._weekday(day) >= 5:
            day += 1
        return self._work_time(day)

    def _next_id(self, prefix: str) -> str:
        self.counters[prefix] += 1
        return f"{self.s.id_prefix}{prefix}-{self.counters[prefix]:05d}"

    def _teammate(self, rep: _Rep) -> _Rep:
        return self.rng.choice(self.team_reps[rep.team])

    def _stamp(self, ts: int, utc: bool | None = None) -> str:
        """RFC 3339 text for model time ``ts``: local offset, or ``Z`` for some integrations."""
        if utc is None:
            utc = self.rng.random() < UTC_STAMP_RATE
        return self.clock.format(ts if self.to_wall is None else self.to_wall(ts), utc)

    # -- event handlers: each emits one event and schedules what follows from it

    def _lead_created(self, ts: int, lead: _Lead) -> dict:
        rng = self.rng
        lead.id = self._next_id("ld")
        event = {"event_id": self.ids.next(), "type": "lead.created",
                 "occurred_at": self._stamp(ts), "lead_id": lead.id}
        if not lead.teamless:
            event["team_id"] = lead.rep.team
        if lead.routed:
            event["rep_id"] = lead.rep.id
            lead.rep.recent_leads.append(lead.id)
        event["source"] = lead.source
        if rng.random() < QUALIFY_RATE[lead.source]:
            self._at(self._workdays_later(rng.lognormvariate(1.5, 0.6)), self._lead_qualified, lead)
        return event

    def _lead_qualified(self, ts: int, lead: _Lead) -> dict:
        rng = self.rng
        rep = lead.rep if lead.routed and rng.random() < 0.8 else self._teammate(lead.rep)
        rep.recent_leads.append(lead.id)
        event = {"event_id": self.ids.next(), "type": "lead.qualified",
                 "occurred_at": self._stamp(ts), "lead_id": lead.id, "team_id": rep.team,
                 "rep_id": rep.id}
        if rng.random() < DEAL_RATE:
            owner = rep if rng.random() < 0.9 else self._teammate(rep)
            deal = _Deal(owner, lead.source, _deal_amount(rng), self._next_id("acc"), lead.id)
            self._at(self._workdays_later(rng.lognormvariate(1.3, 0.6)), self._deal_created, deal)
        return event

    def _deal_created(self, ts: int, deal: _Deal) -> dict | None:
        rng = self.rng
        deal.id = self._next_id("op")
        deal.opened_at = ts
        deal.rep.recent_deals.append(deal.id)
        cycle_days = rng.lognormvariate(math.log(20), 0.55) * (deal.amount / 12_000) ** 0.2
        close_ts = self._workdays_later(min(cycle_days, 180))
        self._at(close_ts, self._deal_closed, deal)
        if rng.random() < UNSEEN_DEAL_RATE:
            if self.stages:
                self._plan_pipeline(ts, close_ts, deal, seen=False)
            return None
        event = {"event_id": self.ids.next(), "type": "deal.created",
                 "occurred_at": self._stamp(ts), "deal_id": deal.id, "team_id": deal.rep.team,
                 "rep_id": deal.rep.id}
        if rng.random() < 0.95:
            event["amount"] = deal.amount
            event["currency"] = self.s.currency
        if deal.lead_id is not None:
            event["lead_id"] = deal.lead_id
        if deal.source == "expansion" or rng.random() < 0.5:
            event["customer_id"] = deal.customer_id
        if self.stages:
            plan = self._plan_pipeline(ts, close_ts, deal, amount="amount" in event)
            if plan.stage is not None:
                event["stage"] = self.stages[plan.stage]
            if plan.close_day is not None:
                event["expected_close_at"] = self._close_date(
                    ts, plan.close_day, event["occurred_at"].endswith("Z"))
        return event

    def _plan_pipeline(self, ts: int, close_ts: int, deal: _Deal, seen: bool = True,
                       amount: bool = True) -> DealPlan:
        """v2: decide the first close's outcome and schedule the deal's ``deal.updated`` events."""
        prng = self.pipeline_rng
        deal.planned_won = prng.random() < min(0.9, WIN_RATE[deal.source] * deal.rep.skill)
        plan = plan_deal(prng, len(self.stages), ts, close_ts, deal.planned_won, self.clock,
                         self._office_time,
                         stage_on_create=seen and prng.random() >= STAGELESS_DEAL_RATE,
                         date_on_create=seen and prng.random() >= UNDATED_DEAL_RATE,
                         amount_on_create=amount)
        deal.stage, deal.close_day = plan.stage, plan.close_day
        for at, change in plan.changes:
            self._at(at, self._deal_updated, (deal, change))
        return plan

    def _deal_updated(self, ts: int, item: tuple[_Deal, Change]) -> dict:
        """v2: one planned change of an open deal (or its re-open), as the CRM sends it."""
        deal, change = item
        prng = self.pipeline_rng
        utc = prng.random() < UTC_STAMP_RATE
        event: dict[str, object] = {"event_id": self.ids.next(), "type": "deal.updated",
                                    "occurred_at": self._stamp(ts, utc), "deal_id": deal.id}
        full = change.full
        if change.stage is not None:
            deal.stage = change.stage
        if deal.stage is not None and (change.stage is not None or change.with_stage or full):
            event["stage"] = self.stages[deal.stage]
        if change.amount_factor is not None:
            deal.amount = max(MIN_AMOUNT, float(round(deal.amount * change.amount_factor, -1)))
        if change.amount_factor is not None or change.fill_amount or full:
            event["amount"] = deal.amount
            event["currency"] = self.s.currency
        if change.close_day is not None:
            deal.close_day = change.close_day
        if deal.close_day is not None and (change.close_day is not None
                                           or change.with_close_date or full):
            event["expected_close_at"] = self._close_date(ts, deal.close_day, utc)
        team = deal.rep.team
        if change.owner_move is not None:
            deal.rep = self._new_owner(deal.rep, change.owner_move)
            deal.rep.recent_deals.append(deal.id)
        if change.owner_move is not None or full:
            if full or deal.rep.team != team or prng.random() < 0.7:
                event["team_id"] = deal.rep.team
            event["rep_id"] = deal.rep.id
        return event

    def _new_owner(self, rep: _Rep, move: str) -> _Rep:
        prng = self.pipeline_rng
        if move == "other" and len(self.team_reps) > 1:
            team = prng.choice([t for t in self.team_reps if t != rep.team])
            return prng.choice(self.team_reps[team])
        others = [r for r in self.team_reps[rep.team] if r is not rep]
        return prng.choice(others) if others else rep

    def _deal_closed(self, ts: int, deal: _Deal) -> dict:
        rng = self.rng
        rep = deal.rep if rng.random() < 0.9 else self._teammate(deal.rep)
        if deal.closes == 0:
            won = deal.planned_won if self.stages else (
                rng.random() < min(0.9, WIN_RATE[deal.source] * deal.rep.skill))
        else:  # reopened: lost deals revived, won deals fallen through, or renegotiated
            won = rng.random() < (0.6 if not deal.won else 0.3)
        event = {"event_id": self.ids.next(), "type": "deal.closed",
                 "occurred_at": self._stamp(ts), "deal_id": deal.id, "team_id": rep.team,
                 "rep_id": rep.id, "outcome": "won" if won else "lost"}
        if won:
            event["amount"] = round(deal.amount * rng.uniform(0.85, 1.05), 2)
            event["customer_id"] = deal.customer_id
            event["opened_at"] = self._stamp(deal.opened_at, utc=False)
            event["currency"] = self.s.currency
            if not deal.won:
                self._on_first_win(ts, deal, event["amount"])
        else:
            if rng.random() < 0.5:
                event["amount"] = deal.amount
                event["currency"] = self.s.currency
            if rng.random() < 0.5:
                event["opened_at"] = self._stamp(deal.opened_at, utc=False)
        deal.won = deal.won or won
        deal.closes += 1
        if deal.closes == 1 and rng.random() < REOPEN_RATE:
            if self.stages:  # v2: the CRM re-opens the deal with a stage, then it closes again
                at, change, reclose = plan_reopen(self.pipeline_rng, len(self.stages),
                                                  deal.stage, won, ts, self.clock,
                                                  self._office_time)
                self._at(at, self._deal_updated, (deal, change))
                self._at(reclose, self._deal_closed, deal)
            else:
                self._at(self._workdays_later(rng.uniform(7, 40)), self._deal_closed, deal)
        return event

    def _on_first_win(self, ts: int, deal: _Deal, amount: float) -> None:
        rng = self.rng
        if deal.source != "expansion":
            self.customers.append(deal.customer_id)
            if len(self.customers) > 20_000:  # bounded in endless live runs
                del self.customers[:10_000]
        if rng.random() < 0.95:
            mrr = round(amount / 12 * rng.uniform(0.8, 1.2), 2)
            sub = _Subscription(deal.customer_id, mrr, MONTHLY_CHURN["sales"] / 30)
            self._at(ts + rng.randrange(600, 10 * _DAY_S), self._subscription_started, sub)

    def _subscription_started(self, ts: int, sub: _Subscription) -> dict:
        rng = self.rng
        sub.id = self._next_id("sub")
        event = {"event_id": self.ids.next(), "type": "subscription.started",  # from billing:
                 "occurred_at": self._stamp(ts, utc=True), "schema_version": 1,  # UTC, versioned
                 "subscription_id": sub.id, "customer_id": sub.customer_id, "mrr": sub.mrr,
                 "currency": self.s.currency}
        lifetime_s = rng.expovariate(sub.churn_per_day) * _DAY_S
        if lifetime_s < 20 * 365 * _DAY_S:
            self._at(ts + int(lifetime_s) + 1, self._subscription_cancelled, sub)
        return event

    def _subscription_cancelled(self, ts: int, sub: _Subscription) -> dict:
        rng = self.rng
        event = {"event_id": self.ids.next(), "type": "subscription.cancelled",
                 "occurred_at": self._stamp(ts, utc=True), "schema_version": 1,
                 "subscription_id": sub.id, "customer_id": sub.customer_id}
        if rng.random() < RETURN_RATE:
            comeback = _Subscription(sub.customer_id, round(sub.mrr * rng.uniform(0.7, 1.3), 2),
                                     sub.churn_per_day)
            self._at(ts + int(rng.uniform(30, 240) * _DAY_S), self._subscription_started, comeback)
        return event

    def _activity(self, ts: int, rep: _Rep) -> dict:
        rng = self.rng
        kind = self.activity_table[int(rng.random() * 100)]
        event = {"event_id": self.ids.next(), "type": "activity.logged",
                 "occurred_at": self._stamp(ts), "team_id": rep.team, "rep_id": rep.id,
                 "activity_type": kind}
        link = rng.random()
        if link < 0.45 and rep.recent_deals:
            event["deal_id"] = rep.recent_deals[int(rng.random() * len(rep.recent_deals))]
        elif link < 0.85 and rep.recent_leads:
            event["lead_id"] = rep.recent_leads[int(rng.random() * len(rep.recent_leads))]
        duration = _duration_seconds(rng, kind)
        if duration is not None:
            event["duration_seconds"] = duration
        return event

    def _spend(self, ts: int, spend: tuple[str, str | None, float]) -> dict:
        category, team, amount = spend
        event = {"event_id": self.ids.next(), "type": "spend.recorded",
                 "occurred_at": self._stamp(ts), "amount": round(amount, 2), "category": category}
        if team is not None:
            event["team_id"] = team
        event["currency"] = self.s.currency
        return event


def _table(weights: dict[str, int]) -> tuple[str, ...]:
    """A 100-slot lookup table: a weighted choice is one ``table[int(random() * 100)]``."""
    assert sum(weights.values()) == 100
    return tuple(name for name, weight in weights.items() for _ in range(weight))


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; normal approximation for large means)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _deal_amount(rng: random.Random) -> float:
    """Deal sizes are log-normal: many around 12k, a long tail of six-figure deals."""
    return float(round(rng.lognormvariate(math.log(12_000), 0.8), -1) or 500.0)


def _duration_seconds(rng: random.Random, kind: str) -> int | None:
    if kind == "call":
        return int(rng.lognormvariate(math.log(420), 0.8))
    if kind == "meeting":
        return rng.choice((1800, 2700, 3600))
    if kind == "demo":
        return rng.choice((1800, 2700, 3600, 5400))
    if rng.random() < 0.6:  # emails and other tasks mostly carry no duration
        return None
    return rng.randrange(30, 900)


# --- ids and time -------------------------------------------------------------------------------


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_BASE36_TRIPLES = tuple(a + b + c for a in _BASE36 for b in _BASE36 for c in _BASE36)


class _EventIds:
    """Random-looking 10-character base-36 ids that never repeat.

    A keyed bijection of 52-bit numbers (xor-shift-multiply rounds, as in hash finalisers),
    restricted to ``[0, 36**10)`` by cycle walking, applied to a counter: distinct counters give
    distinct ids, with no memory of past ids. ``region`` separates the counters of independent
    streams (the model, the noise) that share one key, so they cannot collide either.
    """

    _SPACE = 36 ** 10
    _MASK = (1 << 52) - 1

    def __init__(self, seed: int, region: int, prefix: str = "") -> None:
        self._prefix = prefix
        rng = random.Random(f"{seed}:event-ids")
        self._key_a, self._key_b = rng.getrandbits(52), rng.getrandbits(52)
        self._counter = rng.getrandbits(49) + region * (1 << 50)

    def next(self) -> str:
        value, mask = self._counter, self._MASK
        self._counter += 1
        while True:
            value ^= self._key_a
            value ^= value >> 25
            value = (value * 0x9E3779B97F4A7C15) & mask  # odd multiplier: invertible mod 2**52
            value ^= value >> 27
            value = (value * 0xBF58476D1CE4E5B9 ^ self._key_b) & mask
            value ^= value >> 26
            if value < self._SPACE:
                break
        rest, low = divmod(value, 46_656)
        first, middle = divmod(rest, 46_656)
        head, high = divmod(first, 46_656)
        triples = _BASE36_TRIPLES
        return self._prefix + _BASE36[head] + triples[high] + triples[middle] + triples[low]


_MINUTE_SECOND = tuple(f"{m:02d}:{s:02d}" for m in range(60) for s in range(60))


class _Clock:
    """Local days ↔ epoch seconds and RFC 3339 text for one zone, cached per hour for speed."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.millis = False  # live mode: fractional seconds as milliseconds
        self._midnights: dict[int, int] = {}
        self._offsets: dict[int, tuple[int, str]] = {}
        self._prefixes: dict[int, str] = {}

    def midnight(self, day: int) -> int:
        """Epoch seconds of local midnight starting proleptic ordinal ``day``."""
        value = self._midnights.get(day)
        if value is None:
            local = datetime.combine(date.fromordinal(day), time(0), self.zone)
            value = self._midnights[day] = int(local.timestamp())
        return value

    def midnight_text(self, day: int, utc: bool) -> str:
        """RFC 3339 text of local midnight starting ``day``: local offset, or UTC with ``Z``."""
        ts = self.midnight(day)
        offset, suffix = (0, "Z") if utc else self._offset(ts // 3600)
        local = datetime.fromtimestamp(ts + offset, timezone.utc)
        return local.strftime("%Y-%m-%dT%H:%M:%S") + suffix

    def day_of(self, ts: float) -> int:
        """The local day (proleptic ordinal) containing instant ``ts``."""
        local = math.floor(ts) + self._offset(math.floor(ts) // 3600)[0]
        return local // _DAY_S + _EPOCH_ORDINAL

    def _offset(self, utc_hour: int) -> tuple[int, str]:
        entry = self._offsets.get(utc_hour)
        if entry is None:
            if len(self._offsets) > 200_000:
                self._offsets.clear()
            offset = datetime.fromtimestamp(utc_hour * 3600, self.zone).utcoffset()
            seconds = int(offset.total_seconds()) if offset else 0
            sign, magnitude = ("-" if seconds < 0 else "+"), abs(seconds)
            text = f"{sign}{magnitude // 3600:02d}:{magnitude % 3600 // 60:02d}"
            entry = self._offsets[utc_hour] = (seconds, text)
        return entry

    def format(self, ts: float, utc: bool) -> str:
        """``ts`` as RFC 3339 in the zone's local offset, or in UTC with ``Z``."""
        whole = ts if ts.__class__ is int else math.floor(ts)
        offset, suffix = (0, "Z") if utc else self._offset(whole // 3600)
        local = whole + offset
        prefix = self._prefixes.get(local // 3600)
        if prefix is None:
            if len(self._prefixes) > 200_000:
                self._prefixes.clear()
            hour = datetime.fromtimestamp(local // 3600 * 3600, timezone.utc)
            prefix = self._prefixes[local // 3600] = hour.strftime("%Y-%m-%dT%H:")
        text = prefix + _MINUTE_SECOND[local % 3600]
        if self.millis:
            text += f".{int((ts - whole) * 1000):03d}"
        return text + suffix


# --- noise: redeliveries and invalid messages -------------------------------------------------

_REQUIRED = {
    "lead.created": ("lead_id",),
    "lead.qualified": ("lead_id", "team_id", "rep_id"),
    "activity.logged": ("team_id", "rep_id", "activity_type"),
    "deal.created": ("deal_id", "team_id", "rep_id"),
    "deal.updated": ("deal_id",),
    "deal.closed": ("deal_id", "team_id", "rep_id", "outcome"),
    "subscription.started": ("subscription_id", "customer_id", "mrr"),
    "subscription.cancelled": ("subscription_id", "customer_id"),
    "spend.recorded": ("amount", "category"),
}
_INVALID_KINDS = ("malformed_json", "not_an_object", "unknown_type", "missing_field",
                  "invalid_field", "unsupported_schema_version", "currency_mismatch")


class _Noise:
    """Serialises events and adds the settings' redeliveries and invalid messages."""

    def __init__(self, settings: GeneratorSettings) -> None:
        self.s = settings
        self.rng = random.Random(f"{settings.seed}:noise")
        self.ids = _EventIds(settings.seed, region=1, prefix=settings.id_prefix)
        self.position = 0
        self.redeliveries: list[tuple[int, int, bytes]] = []  # (due position, tie, line)

    def lines(self, event: dict) -> list[bytes]:
        line = orjson.dumps(event)
        s = self.s
        if not s.duplicates and not s.invalid:
            return [line]
        rng, out = self.rng, [line]
        self.position += 1
        if s.invalid and rng.random() < s.invalid:
            out.append(self._invalid(event))
        if s.duplicates and rng.random() < s.duplicates:
            due = self.position + rng.randrange(0, 50)
            heapq.heappush(self.redeliveries, (due, self.position, line))
        while self.redeliveries and self.redeliveries[0][0] <= self.position:
            out.append(heapq.heappop(self.redeliveries)[2])
        return out

    def flush(self) -> list[bytes]:
        """The redeliveries still due at the end of the stream."""
        out = [line for _, _, line in sorted(self.redeliveries)]
        self.redeliveries.clear()
        return out

    def _invalid(self, event: dict) -> bytes:
        """A message derived from ``event`` that SPEC §1.3 rejects, with a fresh event id."""
        rng = self.rng
        bad = dict(event, event_id=self.ids.next())
        kind = rng.choice(_INVALID_KINDS)
        if kind == "malformed_json":
            text = orjson.dumps(bad)
            return text[: rng.randrange(1, len(text) - 1)]
        if kind == "not_an_object":
            return orjson.dumps(rng.choice((list(bad.values()), bad["type"], len(bad))))
        if kind == "unknown_type":
            bad["type"] = rng.choice(("lead.deleted", "deal.deleted", "contact.created"))
        elif kind == "missing_field":
            del bad[rng.choice(("event_id", "type", "occurred_at") + _REQUIRED[bad["type"]])]
        elif kind == "invalid_field":
            self._corrupt_field(bad)
        elif kind == "unsupported_schema_version":
            bad["schema_version"] = 2
        else:  # currency_mismatch needs a money-carrying event
            if "currency" not in bad:
                bad = {"event_id": bad["event_id"], "type": "spend.recorded",
                       "occurred_at": bad["occurred_at"], "amount": 250.0, "category": "marketing"}
            bad["currency"] = "EUR" if self.s.currency != "EUR" else "USD"
        return orjson.dumps(bad)

    def _corrupt_field(self, bad: dict) -> None:
        rng = self.rng
        choice = rng.randrange(4)
        if choice == 0:  # naive timestamp: the zone is missing
            text = bad["occurred_at"]
            bad["occurred_at"] = text[:-1] if text.endswith("Z") else text[:-6]
        elif choice == 1:  # an id that is not an id
            name = next((k for k in _REQUIRED[bad["type"]] if k.endswith("_id")), "team_id")
            bad[name] = rng.choice(("", 42, "x" * 129, "bad\u0007id"))
        elif choice == 2 and (bad["type"] in ("deal.created", "deal.closed", "spend.recorded",
                                              "subscription.started")
                              or (bad["type"] == "deal.updated" and "amount" in bad)):
            money = "mrr" if bad["type"] == "subscription.started" else "amount"
            bad[money] = rng.choice((-100.0, "1200.00", True))
        else:  # a value outside its enumeration (or, where there is none, a bad timestamp)
            for name, wrong in (("activity_type", "lunch"), ("outcome", "pending"),
                                ("category", "travel"), ("stage", "no-such-stage")):
                if name in bad:
                    bad[name] = wrong
                    return
            bad["occurred_at"] = "yesterday"

