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

from engine.calendar import SLOT_US, Calendar
from engine.config import CalendarConfig
from engine.event import Event
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
    Aggregate,
    Contribution,
)
from engine.routing import ASPECT_ACQUISITION, ASPECT_PRIMARY

_SPEND_INDEX = {"marketing": SPEND_MARKETING, "sales": SPEND_SALES}


def _contribution(ts: int, team: str | None, rep: str | None, active: bool,
                  values: tuple[tuple[int, int], ...]) -> Contribution:
    """Builds a Contribution without NamedTuple's Python-level ``__new__`` (hot path)."""
    return _tuple_new(Contribution, (ts, team, rep, active, values))


_tuple_new = tuple.__new__
_ACTIVITY_VALUES = {name: ((index, 1),) for name, index in ACTIVITY_INDEX.items()}
_LEADS_CREATED_VALUES = ((LEADS_CREATED, 1),)
_LEADS_QUALIFIED_VALUES = ((LEADS_QUALIFIED, 1),)


@dataclass(slots=True)
class Attributed:
    """The deciding event of an entity fact: its time, id (tie-break) and attribution."""

    ts: int
    event_id: str
    team: str | None
    rep: str | None

    def key(self) -> tuple[int, str]:
        return (self.ts, self.event_id)


@dataclass(slots=True)
class Lead:
    created: Attributed | None = None
    qualified: Attributed | None = None


@dataclass(order=True, slots=True)
class Close:
    ts: int
    event_id: str
    team: str = field(compare=False)
    rep: str = field(compare=False)
    won: bool = field(compare=False)
    amount: int = field(compare=False)
    opened_at: int | None = field(compare=False)


@dataclass(slots=True)
class Deal:
    created: Attributed | None = None
    closes: list[Close] = field(default_factory=list)  # sorted by (ts, event_id)

    def max_ts(self) -> int:
        ts = self.closes[-1].ts if self.closes else -(1 << 62)
        return max(ts, self.created.ts) if self.created else ts


@dataclass(slots=True)
class Subscription:
    start_ts: int | None = None
    start_id: str = ""
    mrr: int = 0
    cancels: list[int] = field(default_factory=list)  # sorted cancellation instants

    def ended_at(self) -> int | None:
        """Earliest cancellation at or after the start (SPEC §3)."""
        for ts in self.cancels:
            if ts >= self.start_ts:
                return ts
        return None

    def active_at(self, b: int) -> bool:
        if self.start_ts is None or self.start_ts >= b:
            return False
        end = self.ended_at()
        return end is None or end >= b


@dataclass(slots=True)
class Customer:
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    won_at: int | None = None  # earliest won close naming this customer

    def acquired_at(self) -> int | None:
        starts = [s.start_ts for s in self.subscriptions.values() if s.start_ts is not None]
        if self.won_at is not None:
            starts.append(self.won_at)
        return min(starts) if starts else None


class DayBucket:
    """The contributions whose instant falls on one local date, with a cached aggregate."""

    __slots__ = ("items", "fixed", "month", "_aggregate")

    def __init__(self, month: int) -> None:
        self.items: dict[tuple, Contribution] = {}  # entity effects, replaced as facts change
        self.fixed: list[Contribution] = []  # activities and spend: counted once, never change
        self.month = month  # first-of-month ordinal, for invalidating month sums
        self._aggregate: Aggregate | None = None

    def aggregate(self) -> Aggregate:
        agg = self._aggregate
        if agg is None:
            agg = Aggregate()
            for c in self.items.values():
                agg.add(c)
            for c in self.fixed:
                agg.add(c)
            self._aggregate = agg
        return agg

    def aggregate_before(self, cutoff: int) -> Aggregate:
        agg = Aggregate()
        for contributions in (self.items.values(), self.fixed):
            for c in contributions:
                if c.ts < cutoff:
                    agg.add(c)
        return agg


class Core:
    """Entity state and flows for one shard of events (all of them, or one partition's)."""

    def __init__(self, calendar: Calendar | CalendarConfig) -> None:
        self.calendar = calendar if isinstance(calendar, Calendar) else Calendar(calendar)
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
        self.rep_first: dict[str, int] = {}
        self.version = 0
        self._slot_day = self.calendar.slot_day  # the calendar's memo, read inline for speed

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
        if event_id in seen:
            return False
        seen.add(event_id)
        self.version += 1
        ts = event.ts
        day = self._slot_day.get(ts // SLOT_US) or self.calendar.local_day(ts)
        stamps = self.event_ts.get(day)
        if stamps is None:
            stamps = self.event_ts[day] = array("q")
            self.event_ids[day] = []
        stamps.append(ts)
        self.event_ids[day].append(event_id)
        team, rep = event.team_id, event.rep_id
        if team is not None:
            first = self.team_first.get(team)
            if first is None or ts < first:
                self.team_first[team] = ts
        if rep is not None:
            first = self.rep_first.get(rep)
            if first is None or ts < first:
                self.rep_first[rep] = ts
        kind = event.type
        if kind == "activity.logged":
            self._put_fixed(day, _contribution(ts, team, rep, True,
                                               _ACTIVITY_VALUES[event.activity_type]))
            return True
        _HANDLERS[kind](self, event)
        if aspect is None and kind == "deal.closed":
            self._apply_acquisition(event)
        return True

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

    def _lead_created(self, e: Event) -> None:
        self._lead_fact(e, "created", "lc", _LEADS_CREATED_VALUES)

    def _lead_qualified(self, e: Event) -> None:
        self._lead_fact(e, "qualified", "lq", _LEADS_QUALIFIED_VALUES)

    def _lead_fact(self, e: Event, fact: str, tag: str, values: tuple) -> None:
        """A lead's created or qualified fact: the earliest event decides (SPEC §3)."""
        lead = self.leads.get(e.lead_id)
        if lead is None:
            lead = self.leads[e.lead_id] = Lead()
        old = getattr(lead, fact)
        if old is not None and (old.ts, old.event_id) <= (e.ts, e.event_id):
            return
        if old is not None:
            self._drop((tag, e.lead_id), old.ts)
        setattr(lead, fact, Attributed(e.ts, e.event_id, e.team_id, e.rep_id))
        self._put((tag, e.lead_id), _contribution(e.ts, e.team_id, e.rep_id, True, values))

    def _spend(self, e: Event) -> None:
        day = self._slot_day.get(e.ts // SLOT_US) or self.calendar.local_day(e.ts)
        self._put_fixed(day, _contribution(
            e.ts, None, None, False, ((_SPEND_INDEX[e.category], e.amount),)))

    def _deal_created(self, e: Event) -> None:
        deal = self.deals.get(e.deal_id)
        if deal is None:
            deal = self.deals[e.deal_id] = Deal()
        new = Attributed(e.ts, e.event_id, e.team_id, e.rep_id)
        if deal.created is None or new.key() < deal.created.key():
            self._drop_deal(e.deal_id, deal)
            deal.created = new
            self._put_deal(e.deal_id, deal)

    def _deal_closed(self, e: Event) -> None:
        deal = self.deals.get(e.deal_id)
        if deal is None:
            deal = self.deals[e.deal_id] = Deal()
        self._drop_deal(e.deal_id, deal)
        won = e.outcome == "won"
        amount = (e.amount or 0) if won else 0
        insort(deal.closes, Close(e.ts, e.event_id, e.team_id, e.rep_id, won, amount,
                                  e.opened_at))
        self._put_deal(e.deal_id, deal)

    def _drop_deal(self, deal_id: str, deal: Deal) -> None:
        if deal.created is not None:
            self._drop(("dc", deal_id), deal.created.ts)
        if deal.closes:
            self._drop(("dx", deal_id), deal.closes[-1].ts)

    def _put_deal(self, deal_id: str, deal: Deal) -> None:
        for key, contribution in deal_contributions(deal_id, deal, None):
            self._put(key, contribution)

    def _subscription_started(self, e: Event) -> None:
        customer = self._customer_before_change(e.customer_id)
        sub = customer.subscriptions.get(e.subscription_id)
        if sub is None:
            sub = customer.subscriptions[e.subscription_id] = Subscription()
        if sub.start_ts is None or (e.ts, e.event_id) < (sub.start_ts, sub.start_id):
            sub.start_ts, sub.start_id, sub.mrr = e.ts, e.event_id, e.mrr
        self._customer_after_change(e.customer_id, customer)

    def _subscription_cancelled(self, e: Event) -> None:
        customer = self._customer_before_change(e.customer_id)
        sub = customer.subscriptions.get(e.subscription_id)
        if sub is None:
            sub = customer.subscriptions[e.subscription_id] = Subscription()
        insort(sub.cancels, e.ts)
        self._customer_after_change(e.customer_id, customer)

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

    def _bucket(self, ts: int) -> DayBucket:
        day = self._slot_day.get(ts // SLOT_US) or self.calendar.local_day(ts)
        bucket = self.days.get(day)
        if bucket is None:
            month = self.calendar.period_start_day("month", day)
            bucket = self.days[day] = DayBucket(month)
        return bucket

    def _touch(self, bucket: DayBucket) -> None:
        bucket._aggregate = None
        versions = self.month_version
        versions[bucket.month] = versions.get(bucket.month, 0) + 1

    def _put_fixed(self, day: int, contribution: Contribution) -> None:
        """A contribution that never changes (an activity, a spend): no key, no retraction."""
        bucket = self.days.get(day)
        if bucket is None:
            bucket = self.days[day] = DayBucket(self.calendar.period_start_day("month", day))
        bucket.fixed.append(contribution)
        bucket._aggregate = None
        versions = self.month_version
        versions[bucket.month] = versions.get(bucket.month, 0) + 1

    def _put(self, key: tuple, contribution: Contribution) -> None:
        bucket = self._bucket(contribution.ts)
        bucket.items[key] = contribution
        self._touch(bucket)

    def _drop(self, key: tuple, ts: int) -> None:
        day = self._slot_day.get(ts // SLOT_US) or self.calendar.local_day(ts)
        bucket = self.days.get(day)
        if bucket is not None and bucket.items.pop(key, None) is not None:
            self._touch(bucket)


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
        close = closes[-1]
        if close.won:
            opened = created.ts if created is not None else close.opened_at
            values: tuple[tuple[int, int], ...] = ((DEALS_WON, 1), (REVENUE_WON, close.amount))
            if opened is not None:
                values += ((CYCLE_SUM_US, max(0, close.ts - opened)), (CYCLE_COUNT, 1))
        else:
            values = ((DEALS_LOST, 1),)
        out.append((("dx", deal_id), Contribution(close.ts, close.team, close.rep, True, values)))
    return out


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


_HANDLERS = {
    "lead.created": Core._lead_created,
    "lead.qualified": Core._lead_qualified,
    "deal.created": Core._deal_created,
    "deal.closed": Core._deal_closed,
    "subscription.started": Core._subscription_started,
    "subscription.cancelled": Core._subscription_cancelled,
    "spend.recorded": Core._spend,
}

ASPECTS = (ASPECT_PRIMARY, ASPECT_ACQUISITION)
