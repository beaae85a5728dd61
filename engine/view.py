"""Questions over one core or many (a worker's partitions) as seen at an instant ``as_of``.

Why a separate view: the core stores every event it was given, including ones at or after
``as_of`` (the live engine may be asked about the past, a file may hold future events). The view
applies SPEC §2's visibility: flows in ``[lo, hi)`` with ``hi ≤ as_of`` are whole day buckets
plus one partial day, and the few deals whose deciding close is not yet visible at ``as_of``
are corrected explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.calendar import Calendar, Window
from engine.core import Core, deal_contributions
from engine.measures import N_MEASURES, Aggregate, Contribution


YOY_OFFSET = {"month": 12, "quarter": 4, "year": 1}


@dataclass(slots=True)
class Stocks:
    """Customer and MRR stock figures of one window (SPEC §4, company scope)."""

    customers_active_start: int = 0
    customers_active_end: int = 0
    customers_churned: int = 0
    customers_retained: int = 0
    mrr_start: int = 0
    mrr_end: int = 0
    mrr_churned: int = 0

    def merge(self, other: "Stocks") -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class View:
    """Read-only KPI inputs over ``cores`` at ``as_of`` (µs)."""

    def __init__(self, cores: list[Core], calendar: Calendar, as_of: int) -> None:
        self.cores = cores
        self.calendar = calendar
        self.as_of = as_of
        self.corrections = [c for core in cores for c in _deal_corrections(core, as_of)]
        self.width = cores[0].width if cores else N_MEASURES

    # -- flows --------------------------------------------------------------------------------

    def flows(self, lo: int, hi: int) -> Aggregate:
        """Summed contributions with ``lo ≤ ts < hi``; ``lo`` is a local midnight, ``hi ≤ as_of``."""
        cal = self.calendar
        first = cal.local_day(lo)
        last = cal.local_day(hi)
        partial = cal.midnight(last) != hi
        total = Aggregate(self.width)
        for core in self.cores:
            _sum_days(core, first, last, total)
            if partial:
                bucket = core.days.get(last)
                if bucket is not None:
                    total.merge(bucket.aggregate_before(hi))
        for contribution, sign in self.corrections:
            if lo <= contribution.ts < hi:
                total.add(contribution, sign)
        return total

    def to_date(self, earlier: Window, current: Window) -> Aggregate:
        """``earlier`` measured over the same elapsed absolute time as ``current`` so far."""
        elapsed = self.as_of - current.start
        return self.flows(earlier.start, min(earlier.start + elapsed, earlier.end))

    def growth_base(self, w: Window) -> Aggregate | None:
        """Offset 0: the previous window to date; offset 1: the whole offset-2 window (SPEC §4)."""
        if w.offset == 0:
            return self.to_date(self.calendar.window(w.period, 1, self.as_of), w)
        if w.offset == 1:
            w2 = self.calendar.window(w.period, 2, self.as_of)
            return self.flows(w2.start, w2.end)
        return None

    def year_ago(self, w: Window) -> Aggregate | None:
        """Month, quarter and year offset 0: the same window one year earlier, to date."""
        if w.offset != 0 or w.period not in YOY_OFFSET:
            return None
        return self.to_date(self.calendar.window(w.period, YOY_OFFSET[w.period], self.as_of), w)

    # -- stocks -------------------------------------------------------------------------------

    def stocks(self, start: int, end: int) -> Stocks:
        """Customers and MRR active at ``start`` and at ``end`` (= eff_end of the window)."""
        return self.stocks_for([(start, end)])[0]

    def stocks_for(self, spans: list[tuple[int, int]]) -> list[Stocks]:
        """:meth:`stocks` for many windows in one pass over the customers.

        Each subscription's end is found once and each distinct instant is tested once: the
        report and every scrape ask about ~20 instants, over every customer.
        """
        instants = sorted({b for span in spans for b in span})
        index = {b: i for i, b in enumerate(instants)}
        pairs = [(index[a], index[b]) for a, b in spans]
        out = [Stocks() for _ in spans]
        n = len(instants)
        for core in self.cores:
            for customer in core.customers.values():
                active = [False] * n
                subs = []
                for sub in customer.subscriptions.values():
                    start = sub.start_ts
                    if start is None:
                        continue
                    end = sub.ended_at()
                    flags = [start < b and (end is None or end >= b) for b in instants]
                    if True in flags:
                        subs.append((sub.mrr, flags))
                        active = [x or y for x, y in zip(active, flags)]
                if not subs:
                    continue
                for stocks, (i, j) in zip(out, pairs):
                    a, b = active[i], active[j]
                    if a:
                        stocks.customers_active_start += 1
                        if b:
                            stocks.customers_retained += 1
                        else:
                            stocks.customers_churned += 1
                    if b:
                        stocks.customers_active_end += 1
                    for mrr, flags in subs:
                        if flags[i]:
                            stocks.mrr_start += mrr
                            if not flags[j]:
                                stocks.mrr_churned += mrr
                        if flags[j]:
                            stocks.mrr_end += mrr
        return out

    # -- who and how many ---------------------------------------------------------------------

    def teams(self) -> list[str]:
        return _listed(self.cores, "team_first", self.as_of)

    def reps(self) -> list[str]:
        return _listed(self.cores, "rep_first", self.as_of)

    def event_counts(self) -> tuple[int, int]:
        """``(counted, not_visible)``: distinct valid events before / at-or-after ``as_of``."""
        return event_counts(self.cores, self.calendar, self.as_of)


def event_counts(cores: list[Core], calendar: Calendar, as_of: int) -> tuple[int, int]:
    """``(counted, not_visible)`` over ``cores`` without building a :class:`View` (whose
    per-deal pass a cheap poll such as ``/api/events`` does not need)."""
    as_of_day = calendar.local_day(as_of)
    counted = not_visible = 0
    for core in cores:
        for day, stamps in core.event_ts.items():
            if day < as_of_day:
                counted += len(stamps)
            elif day > as_of_day:
                not_visible += len(stamps)
            else:
                before = sum(1 for ts in stamps if ts < as_of)
                counted += before
                not_visible += len(stamps) - before
    return counted, not_visible


def warm_sums(cores: list[Core], as_of: int) -> None:
    """Make the sums a report reads and caches lazily: every complete month before ``as_of``'s
    month, and every day of that month before ``as_of``'s day (both stay valid until a late
    event changes them). Why: a report computed in a forked child (:mod:`streams.forked`)
    fills these caches in the child, where they die with it; made here, in the process that
    keeps the state, each child finds them, and only what changed since is summed again."""
    for core in cores:
        if not core.days:
            continue
        cal = core.calendar
        today = cal.local_day(as_of)
        month = cal.period_start_day("month", today)
        first = cal.period_start_day("month", min(core.days))
        if first < month:
            _sum_days(core, first, month, Aggregate(core.width))
        days = core.days
        for day in range(month, today):
            bucket = days.get(day)
            if bucket is not None:
                bucket.aggregate()


def _sum_days(core: Core, first: int, end: int, total: Aggregate) -> None:
    """Add whole days ``[first, end)`` of one core, using cached month sums where possible."""
    cal = core.calendar
    cache = core.month_cache
    days = core.days
    d = first
    while d < end:
        month_end = cal.shift_day("month", cal.period_start_day("month", d), 1)
        if cal.period_start_day("month", d) == d and month_end <= end:
            version = core.month_version.get(d, 0)
            cached = cache.get(d)
            if cached is None or cached[0] != version:
                agg = Aggregate(core.width)
                for day in range(d, month_end):
                    bucket = days.get(day)
                    if bucket is not None:
                        agg.merge(bucket.aggregate())
                cache[d] = cached = (version, agg)
            total.merge(cached[1])
            d = month_end
            continue
        stop = min(month_end, end)
        for day in range(d, stop):
            bucket = days.get(day)
            if bucket is not None:
                total.merge(bucket.aggregate())
        d = stop


def _deal_corrections(core: Core, as_of: int) -> list[tuple[Contribution, int]]:
    """Signed contributions turning the all-events deal state into the one visible at as_of."""
    out: list[tuple[Contribution, int]] = []
    for deal_id, deal in core.deals.items():
        if deal.max_ts() < as_of:
            continue
        full = deal_contributions(deal_id, deal, None)
        visible = deal_contributions(deal_id, deal, as_of)
        full_before = [c for _, c in full if c.ts < as_of]
        visible_c = [c for _, c in visible]
        if full_before == visible_c:
            continue
        out.extend((c, -1) for c in full_before)
        out.extend((c, 1) for c in visible_c)
    return out


def _listed(cores: list[Core], attr: str, as_of: int) -> list[str]:
    names: set[str] = set()
    for core in cores:
        names.update(name for name, first in getattr(core, attr).items() if first < as_of)
    return sorted(names)
