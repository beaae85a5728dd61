"""The pure KPI core: entity state and day-bucketed flows, updated idempotently per event.

Why this shape (SPEC §3): results must depend only on the set of de-duplicated events, never
on arrival order. Each entity keeps just what its rules need (the earliest ``lead.created``, all
closes of a deal, each subscription's earliest start and its cancellations) and derives its
*contributions* — its effect on additive flow measures at an instant. When a late or
out-of-order event changes an entity, its old contributions are taken out of their day buckets
and the new ones put in, so the buckets always equal a from-scratch computation.

No I/O and no Faust here: the file replay (``kpi-engine report``) and each partition of the live
worker run this same class; :mod:`engine.view` answers questions over one core or many.
"""

from __future__ import annotations

from array import array
from bisect import insort
from dataclasses import dataclass, field
from typing import Final

from engine.calendar import SLOT_US, Calendar
from engine.config import CalendarConfig, PipelineConfig
from engine.event import Event
from engine.lifecycle import (
    CLOSED,
    CREATED,
    NO_STAGE,
    UPDATED,
    DealState,
    StageFlow,
    Step,
    advance,
)
from engine.measures import (
    ACTIVITY_INDEX,
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
    Aggregate,
    Contribution,
    stage_measure,
    vector_width,
)
from engine.routing import ASPECT_ACQUISITION, ASPECT_PRIMARY

_SPEND_INDEX: Final = {"marketing": SPEND_MARKETING, "sales": SPEND_SALES}


# Typed as variable-length tuples, as Contribution.values is: the compiled build would
# otherwise rebuild a fixed-length tuple for every event.
Values = tuple[tuple[int, int], ...]
_ACTIVITY_VALUES: Final[dict[str, Values]] = {
    name: ((index, 1),) for name, index in ACTIVITY_INDEX.items()}
_LEADS_CREATED_VALUES: Final[Values] = ((LEADS_CREATED, 1),)
_LEADS_QUALIFIED_VALUES: Final[Values] = ((LEADS_QUALIFIED, 1),)


# Records made per event write their ``__init__`` out: the compiled build compiles it, while a
# dataclass-generated one stays interpreted.

@dataclass(slots=True, init=False)
class Attributed:
    """The deciding event of an entity fact: its time, id (tie-break) and attribution."""

    ts: int
    event_id: str
    team: str | None
    rep: str | None

    def __init__(self, ts: int, event_id: str, team: str | None, rep: str | None) -> None:
        self.ts = ts
        self.event_id = event_id
        self.team = team
        self.rep = rep

    def key(self) -> tuple[int, str]:
        return (self.ts, self.event_id)


@dataclass(slots=True, init=False)
class Lead:
    created: Attributed | None
    qualified: Attributed | None

    def __init__(self, created: Attributed | None = None,
                 qualified: Attributed | None = None) -> None:
        self.created = created
        self.qualified = qualified


@dataclass(order=True, slots=True, init=False)
class Close:
    ts: int
    event_id: str
    team: str = field(compare=False)
    rep: str = field(compare=False)
    won: bool = field(compare=False)
    amount: int = field(compare=False)
    opened_at: int | None = field(compare=False)

    def __init__(self, ts: int, event_id: str, team: str, rep: str, won: bool, amount: int,
                 opened_at: int | None) -> None:
        self.ts = ts
        self.event_id = event_id
        self.team = team
        self.rep = rep
        self.won = won
        self.amount = amount
        self.opened_at = opened_at


@dataclass(slots=True, init=False)
class Deal:
    """A deal's v1 facts (earliest creation, all closes) and its v2 lifecycle (SPEC §7.3):
    every created/updated/closed step in order with the deal's state after each."""

    created: Attributed | None
    closes: list[Close]  # sorted by (ts, event_id)
    steps: list[Step]  # sorted by (ts, event_id)
    states: list[DealState]  # states[i]: the deal after steps[i]

    def __init__(self, created: Attributed | None = None,
                 closes: list[Close] | None = None) -> None:
        self.created = created
        self.closes = closes if closes is not None else []
        self.steps = []
        self.states = []

    def max_ts(self) -> int:
        """The latest instant of any of the deal's events."""
        return self.steps[-1].ts if self.steps else -(1 << 62)

    def is_open(self) -> bool:
        """Open after all its events (so open at every later instant)."""
        return bool(self.states) and self.states[-1].open


@dataclass(slots=True, init=False)
class Subscription:
    start_ts: int | None
    start_id: str
    mrr: int
    cancels: list[int]  # sorted cancellation instants

    def __init__(self, start_ts: int | None = None, start_id: str = "", mrr: int = 0,
                 cancels: list[int] | None = None) -> None:
        self.start_ts = start_ts
        self.start_id = start_id
        self.mrr = mrr
        self.cancels = cancels if cancels is not None else []

    def ended_at(self) -> int | None:
        """Earliest cancellation at or after the start (SPEC §3)."""
        start = self.start_ts
        if start is None:
            return None
        for ts in self.cancels:
            if ts >= start:
                return ts
        return None

    def active_at(self, b: int) -> bool:
        if self.start_ts is None or self.start_ts >= b:
            return False
        end = self.ended_at()
        return end is None or end >= b


@dataclass(slots=True, init=False)
class Customer:
    subscriptions: dict[str, Subscription]
    won_at: int | None  # earliest won close naming this customer

    def __init__(self, subscriptions: dict[str, Subscription] | None = None,
                 won_at: int | None = None) -> None:
        self.subscriptions = subscriptions if subscriptions is not None else {}
        self.won_at = won_at

    def acquired_at(self) -> int | None:
        starts = [s.start_ts for s in self.subscriptions.values() if s.start_ts is not None]
        if self.won_at is not None:
            starts.append(self.won_at)
        return min(starts) if starts else None


class DayBucket:
    """The contributions whose instant falls on one local date, with a cached aggregate.

    Activities — half of all events — are kept as two machine-word arrays, their instants and
    the index of their *shape* (team, rep, activity type) in the core's list of shapes: 12
    bytes an activity instead of a contribution object (~80 bytes). A day's sum counts each
    shape once and adds it that many times.
    """

    __slots__ = ("items", "fixed", "activity_ts", "activity_shape", "shapes", "month", "width",
                 "max_ts", "_aggregate", "_activity_sum")

    def __init__(self, month: int, width: int, shapes: list[Contribution]) -> None:
        self.items: dict[tuple, Contribution] = {}  # entity effects, replaced as facts change
        self.fixed: list[Contribution] = []  # spend: counted once, never changes
        self.activity_ts: array[int] = array("q")  # activities: counted once, never change
        self.activity_shape: array[int] = array("l")
        self.shapes = shapes  # the core's, shared
        self.month = month  # first-of-month ordinal, for invalidating month sums
        self.width = width  # of the core's measure vectors
        #: no contribution of the day is at or after this instant + 1 (an upper bound: kept
        #: when a contribution is dropped), so a cutoff above it takes the whole day's sum
        self.max_ts = -(1 << 62)
        self._aggregate: Aggregate | None = None
        #: the activities' sum: activities only ever add, so it grows in place once made, and
        #: a day sum redone after an entity change costs the entities, not every activity
        self._activity_sum: Aggregate | None = None

    def aggregate(self) -> Aggregate:
        agg = self._aggregate
        if agg is None:
            agg = Aggregate(self.width)
            for c in self.items.values():
                agg.add(c)
            for c in self.fixed:
                agg.add(c)
            activities = self._activity_sum
            if activities is None:
                activities = self._activity_sum = Aggregate(self.width)
                self._add_activities(activities, self.activity_shape)
            agg.merge(activities)
            self._aggregate = agg
        return agg

    def aggregate_before(self, cutoff: int) -> Aggregate:
        """The sum of the contributions before ``cutoff``. Live reports ask this of today's
        bucket for every window ending now: when nothing of the day is at or after the
        cutoff, it is the cached day sum, instead of a pass over every activity."""
        if self.max_ts < cutoff:
            return self.aggregate()
        agg = Aggregate(self.width)
        for contributions in (self.items.values(), self.fixed):
            for c in contributions:
                if c.ts < cutoff:
                    agg.add(c)
        self._add_activities(agg, [shape for ts, shape in
                                   zip(self.activity_ts, self.activity_shape) if ts < cutoff])
        return agg

    def _add_activities(self, agg: Aggregate, shape_ids: array[int] | list[int]) -> None:
        counts: dict[int, int] = {}
        for shape in shape_ids:
            counts[shape] = counts.get(shape, 0) + 1
        shapes = self.shapes
        for shape, n in counts.items():
            agg.add(shapes[shape], n)

    def contributions(self) -> list[Contribution]:
        """Every contribution of the day as objects (activities made up from their shapes):
        for the few readers that need single contributions, such as the wallboard."""
        out = list(self.items.values()) + self.fixed
        shapes = self.shapes
        for ts, shape in zip(self.activity_ts, self.activity_shape):
            s = shapes[shape]
            out.append(Contribution(ts, s.team, s.rep, s.active, s.values))
        return out


class Core:
    """Entity state and flows for one shard of events (all of them, or one partition's)."""

    def __init__(self, calendar: Calendar | CalendarConfig,
                 pipeline: PipelineConfig | None = None) -> None:
        self.calendar = calendar if isinstance(calendar, Calendar) else Calendar(calendar)
        stages = pipeline.stages if pipeline is not None else ()
        self.stage_index: dict[str, int] = {stage.id: i for i, stage in enumerate(stages)}
        self.width = vector_width(len(stages))
        self.seen: set[str] = set()
        self.seen_acquisitions: set[str] = set()
        self.leads: dict[str, Lead] = {}
        self.deals: dict[str, Deal] = {}
        self.customers: dict[str, Customer] = {}
        self.days: dict[int, DayBucket] = {}
        self.month_version: dict[int, int] = {}  # first-of-month ordinal -> change counter
        self.month_cache: dict[int, tuple[int, Aggregate]] = {}  # filled by engine.view
        self.event_ts: dict[int, array] = {}  # local day -> instants of counted events
        self.event_ids: dict[int, list[str]] = {}  # local day -> their ids (for retention)
        self.team_first: dict[str, int] = {}
        # One string object per team and rep name: every event brings its own copy, and the
        # state keeps one per contribution (about 120 bytes an event at a million events).
        self.names: dict[str, str] = {}
        # The distinct (team, rep, activity type) of activities, which day buckets refer to.
        self.shapes: list[Contribution] = []
        self.shape_ids: dict[tuple[str | None, str | None, str], int] = {}
        self.rep_first: dict[str, int] = {}
        self.version = 0
        self._slot_day = self.calendar.slot_day  # the calendar's memo, read inline for speed
        # The local day of the latest event, with its stamps, ids and bucket: events mostly
        # arrive in time order, so most need no dict lookup for their day. Reset by
        # forget_current_day() whenever day state is removed (engine.retention).
        self._current_day = 0
        self._current_start = self._current_end = 0  # its instants [start, end)
        self._current_stamps: array[int] = array("q")
        self._current_ids: list[str] = []
        self._current_bucket: DayBucket | None = None

    # -- applying events ----------------------------------------------------------------------

    def apply(self, event: Event, aspect: str | None = None) -> bool:
        """Apply one event (``aspect`` None = every aspect); False when it is a duplicate.

        The hot path (every event is counted; activities are half of all events) is written
        out inline: this runs hundreds of thousands of times per second.
        """
        if aspect == ASPECT_ACQUISITION:
            return self._apply_acquisition(event)
        event_id = event.event_id
        seen = self.seen
        before = len(seen)
        seen.add(event_id)  # one hash probe: a duplicate leaves the size unchanged
        if len(seen) == before:
            return False
        self.version += 1
        ts = event.ts
        if self._current_start <= ts < self._current_end:
            day = self._current_day
        else:
            day = self._enter_day(ts)
        self._current_stamps.append(ts)
        self._current_ids.append(event_id)
        team, rep = event.team_id, event.rep_id
        if team is not None:
            team = event.team_id = self._named(team, self.team_first, ts)
        if rep is not None:
            rep = event.rep_id = self._named(rep, self.rep_first, ts)
        kind = event.type
        if kind == "activity.logged":
            activity = event.activity_type
            assert activity is not None
            self._put_activity(day, ts, team, rep, activity)
        elif kind == "lead.created":
            self._lead_fact(event, day, True)
        elif kind == "lead.qualified":
            self._lead_fact(event, day, False)
        elif kind == "deal.created":
            self._deal_created(event)
        elif kind == "deal.updated":
            self._deal_updated(event)
        elif kind == "deal.closed":
            self._deal_closed(event)
            if aspect is None:
                self._apply_acquisition(event)
        elif kind == "subscription.started":
            self._subscription_started(event)
        elif kind == "subscription.cancelled":
            self._subscription_cancelled(event)
        elif kind == "spend.recorded":
            self._spend(event, day)
        else:
            raise ValueError(f"unknown event type {kind!r}")
        return True

    def _named(self, name: str, firsts: dict[str, int], ts: int) -> str:
        """The one string kept for a team or rep name (the event's own copy is replaced with
        it), after noting in ``firsts`` when the name was first seen."""
        known = self.names.get(name)
        if known is None:
            known = self.names[name] = name
        first = firsts.get(known)
        if first is None or ts < first:
            firsts[known] = ts
        return known

    def _apply_acquisition(self, e: Event) -> bool:
        if e.outcome != "won" or e.customer_id is None:
            return False
        if e.event_id in self.seen_acquisitions:
            return False
        self.seen_acquisitions.add(e.event_id)
        self.version += 1
        customer = self._customer_before_change(e.customer_id)
        if customer.won_at is None or e.ts < customer.won_at:
            customer.won_at = e.ts
        self._customer_after_change(e.customer_id, customer)
        return True

    def _lead_fact(self, e: Event, day: int, created: bool) -> None:
        """A lead's created (or qualified) fact: the earliest event decides (SPEC §3)."""
        lead_id = e.lead_id
        assert lead_id is not None
        lead = self.leads.get(lead_id)
        if lead is None:
            lead = self.leads[lead_id] = Lead()
        old = lead.created if created else lead.qualified
        tag = "lc" if created else "lq"
        if old is not None:
            if old.ts < e.ts or (old.ts == e.ts and old.event_id <= e.event_id):
                return
            self._drop((tag, lead_id), old.ts)
        fact = Attributed(e.ts, e.event_id, e.team_id, e.rep_id)
        if created:
            lead.created = fact
        else:
            lead.qualified = fact
        values = _LEADS_CREATED_VALUES if created else _LEADS_QUALIFIED_VALUES
        self._put_at(day, (tag, lead_id), Contribution(e.ts, e.team_id, e.rep_id, True, values))

    def _spend(self, e: Event, day: int) -> None:
        category, amount = e.category, e.amount
        assert category is not None and amount is not None
        self._put_fixed(day, Contribution(
            e.ts, None, None, False, ((_SPEND_INDEX[category], amount),)))

    def _deal_created(self, e: Event) -> None:
        deal_id = e.deal_id
        assert deal_id is not None
        deal = self.deals.get(deal_id)
        if deal is None:
            deal = self.deals[deal_id] = Deal()
        new = Attributed(e.ts, e.event_id, e.team_id, e.rep_id)
        if deal.created is None or new.key() < deal.created.key():
            self._drop_deal(deal_id, deal)
            deal.created = new
            self._put_deal(deal_id, deal)
        self._step(deal_id, deal, Step(e.ts, e.event_id, CREATED, self._stage(e.stage), e.amount,
                                       e.expected_close, e.team_id, e.rep_id))

    def _deal_updated(self, e: Event) -> None:
        """A change of the deal's CRM record: a lifecycle step only (no v1 flow, decision 20)."""
        deal_id = e.deal_id
        assert deal_id is not None
        deal = self.deals.get(deal_id)
        if deal is None:
            deal = self.deals[deal_id] = Deal()
        self._step(deal_id, deal, Step(e.ts, e.event_id, UPDATED, self._stage(e.stage), e.amount,
                                       e.expected_close, e.team_id, e.rep_id))

    def _stage(self, stage: str | None) -> int:
        """A stage id as its configured index; one no longer configured counts as no stage."""
        return NO_STAGE if stage is None else self.stage_index.get(stage, NO_STAGE)

    def _step(self, deal_id: str, deal: Deal, step: Step) -> None:
        """Insert a lifecycle step in order and redo the walk from there (SPEC §7.3).

        Steps mostly arrive in order: then the walk is the new last step alone. Otherwise the
        stage flows of the steps walked again are taken out and put back as they now are.
        """
        steps, states = deal.steps, deal.states
        n = len(steps)
        if n == 0 or not step.before(steps[n - 1]):
            state, flow = advance(states[n - 1] if n else None, step)
            steps.append(step)
            states.append(state)
            if flow is not None:
                self._put_flow(deal_id, step, state, flow)
            return
        i = n - 1
        while i > 0 and step.before(steps[i - 1]):
            i -= 1
        steps.insert(i, step)
        del states[i:]
        for j in range(i, n + 1):
            current = steps[j]
            if j > i:
                self._drop(("sf", deal_id, current.event_id), current.ts)
            state, flow = advance(states[j - 1] if j > 0 else None, current)
            states.append(state)
            if flow is not None:
                self._put_flow(deal_id, current, state, flow)

    def _put_flow(self, deal_id: str, step: Step, state: DealState, flow: StageFlow) -> None:
        """A step's stage entry and/or stay end, for the deal's scope after the step."""
        values: Values = ()
        if flow.entered != NO_STAGE:
            values = ((stage_measure(flow.entered, STAGE_ENTRIES), 1),)
        if flow.ended != NO_STAGE:
            values += ((stage_measure(flow.ended, STAGE_STAY_SUM_US), flow.stay),
                       (stage_measure(flow.ended, STAGE_STAYS), 1))
        self._put(("sf", deal_id, step.event_id),
                  Contribution(step.ts, state.team, state.rep, False, values))

    def _deal_closed(self, e: Event) -> None:
        deal_id, team, rep = e.deal_id, e.team_id, e.rep_id
        assert deal_id is not None and team is not None and rep is not None
        deal = self.deals.get(deal_id)
        if deal is None:
            deal = self.deals[deal_id] = Deal()
        # Only the latest close counts (SPEC §6.5), and the creation does not depend on the
        # closes: the deal's close contribution changes only when the latest close does.
        closes = deal.closes
        before = closes[-1] if closes else None
        won = e.outcome == "won"
        amount = (e.amount or 0) if won else 0
        insort(closes, Close(e.ts, e.event_id, team, rep, won, amount, e.opened_at))
        latest = closes[-1]
        if latest is not before:
            if before is not None:
                self._drop(("dx", deal_id), before.ts)
            self._put(("dx", deal_id), close_contribution(deal.created, latest))
        self._step(deal_id, deal, Step(e.ts, e.event_id, CLOSED, NO_STAGE, e.amount, None,
                                       team, rep))

    def _drop_deal(self, deal_id: str, deal: Deal) -> None:
        if deal.created is not None:
            self._drop(("dc", deal_id), deal.created.ts)
        if deal.closes:
            self._drop(("dx", deal_id), deal.closes[-1].ts)

    def _put_deal(self, deal_id: str, deal: Deal) -> None:
        for key, contribution in deal_contributions(deal_id, deal, None):
            self._put(key, contribution)

    def _subscription_started(self, e: Event) -> None:
        customer_id, subscription_id, mrr = e.customer_id, e.subscription_id, e.mrr
        assert customer_id is not None and subscription_id is not None and mrr is not None
        customer = self._customer_before_change(customer_id)
        sub = customer.subscriptions.get(subscription_id)
        if sub is None:
            sub = customer.subscriptions[subscription_id] = Subscription()
        if sub.start_ts is None or (e.ts, e.event_id) < (sub.start_ts, sub.start_id):
            sub.start_ts, sub.start_id, sub.mrr = e.ts, e.event_id, mrr
        self._customer_after_change(customer_id, customer)

    def _subscription_cancelled(self, e: Event) -> None:
        customer_id, subscription_id = e.customer_id, e.subscription_id
        assert customer_id is not None and subscription_id is not None
        customer = self._customer_before_change(customer_id)
        sub = customer.subscriptions.get(subscription_id)
        if sub is None:
            sub = customer.subscriptions[subscription_id] = Subscription()
        insort(sub.cancels, e.ts)
        self._customer_after_change(customer_id, customer)

    def _customer_before_change(self, customer_id: str) -> Customer:
        customer = self.customers.get(customer_id)
        if customer is None:
            return self.customers.setdefault(customer_id, Customer())
        for key, c in customer_contributions(customer_id, customer):
            self._drop(key, c.ts)
        return customer

    def _customer_after_change(self, customer_id: str, customer: Customer) -> None:
        for key, c in customer_contributions(customer_id, customer):
            self._put(key, c)

    # -- day buckets --------------------------------------------------------------------------

    def _enter_day(self, ts: int) -> int:
        """Make the local day of ``ts`` the current day (creating its stamp lists)."""
        day = self._day(ts)
        stamps = self.event_ts.get(day)
        if stamps is None:
            stamps = self.event_ts[day] = array("q")
            self.event_ids[day] = []
        self._current_day = day
        self._current_start = self.calendar.midnight(day)
        self._current_end = self.calendar.midnight(day + 1)
        self._current_stamps = stamps
        self._current_ids = self.event_ids[day]
        self._current_bucket = self.days.get(day)
        return day

    def forget_current_day(self) -> None:
        """Drop the cached current day (call after removing day state)."""
        self._current_start = self._current_end = 0
        self._current_stamps = array("q")
        self._current_ids = []
        self._current_bucket = None

    def _day(self, ts: int) -> int:
        """The local date of an instant: the calendar's memo, read here without a call."""
        day = self._slot_day.get(ts // SLOT_US)
        return day if day is not None else self.calendar.local_day(ts)

    #
    # A month's version says when its cached sum (engine.view) is stale. That sum is built
    # from the aggregates of all the month's buckets, so a change needs a new version only when
    # it creates a bucket or changes one whose aggregate is cached; a bucket without a cached
    # aggregate has been changed since the month was last summed, which already bumped it.
    # The load of a file thus never touches the version table.

    def _bucket_of_day(self, day: int) -> DayBucket:
        bucket = self.days.get(day)
        if bucket is None:
            bucket = self.days[day] = DayBucket(self.calendar.period_start_day("month", day),
                                                self.width, self.shapes)
            self._bump(bucket.month)
        return bucket

    def _bump(self, month: int) -> None:
        versions = self.month_version
        versions[month] = versions.get(month, 0) + 1

    def _day_bucket(self, day: int) -> DayBucket:
        bucket = self._current_bucket if day == self._current_day else None
        if bucket is None:
            bucket = self.days.get(day)
            if bucket is None:
                bucket = self._bucket_of_day(day)
            if day == self._current_day:
                self._current_bucket = bucket
        return bucket

    def _put_fixed(self, day: int, contribution: Contribution) -> None:
        """A contribution that never changes (a spend): no key, no retraction."""
        bucket = self._day_bucket(day)
        bucket.fixed.append(contribution)
        if contribution.ts > bucket.max_ts:
            bucket.max_ts = contribution.ts
        if bucket._aggregate is not None:
            bucket._aggregate = None
            self._bump(bucket.month)

    def _put_activity(self, day: int, ts: int, team: str | None, rep: str | None,
                      activity: str) -> None:
        """An activity: counted once, never changes; stored as its instant and shape."""
        key = (team, rep, activity)
        shape = self.shape_ids.get(key)
        if shape is None:
            shape = self.shape_ids[key] = len(self.shapes)
            self.shapes.append(Contribution(0, team, rep, True, _ACTIVITY_VALUES[activity]))
        bucket = self._day_bucket(day)
        bucket.activity_ts.append(ts)
        bucket.activity_shape.append(shape)
        if ts > bucket.max_ts:
            bucket.max_ts = ts
        contribution = self.shapes[shape]
        if bucket._activity_sum is not None:
            bucket._activity_sum.add(contribution)
        aggregate = bucket._aggregate
        if aggregate is not None:  # an activity only adds: the day's sum grows in place
            aggregate.add(contribution)
            self._bump(bucket.month)

    def _put_at(self, day: int, key: tuple, contribution: Contribution) -> None:
        """A keyed contribution on its local ``day`` (which must be that of its instant)."""
        bucket = self.days.get(day)
        if bucket is None:
            bucket = self._bucket_of_day(day)
        bucket.items[key] = contribution
        if contribution.ts > bucket.max_ts:
            bucket.max_ts = contribution.ts
        if bucket._aggregate is not None:
            bucket._aggregate = None
            self._bump(bucket.month)

    def _put(self, key: tuple, contribution: Contribution) -> None:
        ts = contribution.ts
        self._put_at(self._day(ts), key, contribution)

    def _drop(self, key: tuple, ts: int) -> None:
        bucket = self.days.get(self._day(ts))
        if bucket is not None and bucket.items.pop(key, None) is not None:
            if bucket._aggregate is not None:
                bucket._aggregate = None
                self._bump(bucket.month)


def deal_contributions(deal_id: str, deal: Deal, as_of: int | None
                       ) -> list[tuple[tuple, Contribution]]:
    """A deal's flow effects, seeing only events before ``as_of`` (None: all events).

    The latest close decides (SPEC §3, §6.5); a won close's cycle runs from the deal's
    ``deal.created`` if visible, else from the close's own ``opened_at``.
    """
    out: list[tuple[tuple, Contribution]] = []
    created = deal.created
    if created is not None and as_of is not None and created.ts >= as_of:
        created = None
    if created is not None:
        out.append((("dc", deal_id), Contribution(
            created.ts, created.team, created.rep, True, ((DEALS_CREATED, 1),))))
    closes = deal.closes
    if as_of is not None:
        closes = [c for c in closes if c.ts < as_of]
    if closes:
        out.append((("dx", deal_id), close_contribution(created, closes[-1])))
    return out


def close_contribution(created: Attributed | None, close: Close) -> Contribution:
    """The effect of a deal's latest close; a won close's cycle runs from the (visible)
    ``deal.created``, else from the close's own ``opened_at``."""
    if close.won:
        opened = created.ts if created is not None else close.opened_at
        values: tuple[tuple[int, int], ...] = ((DEALS_WON, 1), (REVENUE_WON, close.amount))
        if opened is not None:
            values += ((CYCLE_SUM_US, max(0, close.ts - opened)), (CYCLE_COUNT, 1))
    else:
        values = ((DEALS_LOST, 1),)
    return Contribution(close.ts, close.team, close.rep, True, values)


def customer_contributions(customer_id: str, customer: Customer
                           ) -> list[tuple[tuple, Contribution]]:
    """New-customer and new-MRR flows of a customer; both use earliest instants only."""
    out: list[tuple[tuple, Contribution]] = []
    acquired = customer.acquired_at()
    if acquired is not None:
        out.append((("nc", customer_id),
                    Contribution(acquired, None, None, False, ((NEW_CUSTOMERS, 1),))))
    for sub_id, sub in customer.subscriptions.items():
        if sub.start_ts is not None:
            out.append((("mn", customer_id, sub_id),
                        Contribution(sub.start_ts, None, None, False, ((MRR_NEW, sub.mrr),))))
    return out


ASPECTS = (ASPECT_PRIMARY, ASPECT_ACQUISITION)
