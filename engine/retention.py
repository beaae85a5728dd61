"""Retention: forget what no reported window can see any more (SPEC §1.3 ``retention_days``).

Why the engine owns this: Faust's windowed tables expire by wall clock and fixed sizes, and
our state is entities and local-day buckets. The live worker calls :func:`evict` periodically
with ``horizon = now − retention_days``; the oldest reported window (fiscal year offset 1)
starts at most 731 days before ``as_of`` and retention is at least 732 days, so nothing that
a report can show depends on what is dropped here:

- day buckets, counted-event stamps and their ids before the horizon's local day;
- leads whose every fact is before the horizon, and deals whose every event is before it and
  that are not open (SPEC §7.3: a deal still open counts in the pipeline at every later
  instant, however old its last event — like a customer still subscribed);
- customers with no subscription running at or after the horizon and no fact after it (a
  customer still subscribed stays, however old its start: it is active at every instant).

Events older than the horizon are rejected as ``too_late`` at ingestion, so a redelivery of a
forgotten event cannot be counted again.

Returns the route keys (:mod:`engine.routing`) of the entities dropped, so the live engine can
delete their durable records; activity and spend records are per UTC day and are expired by
:func:`bucket_key_expired`.
"""

from __future__ import annotations

from engine.core import Core
from engine.event import MICRO

_DAY_US = 86_400 * MICRO


def evict(core: Core, horizon: int) -> list[str]:
    """Drop state that lies entirely before ``horizon`` (µs); the dropped entities' route keys."""
    first_day = core.calendar.local_day(horizon)
    core.forget_current_day()
    for day in [d for d in core.days if d < first_day]:
        del core.days[day]
    for day in [d for d in core.event_ts if d < first_day]:
        del core.event_ts[day]
        core.seen.difference_update(core.event_ids.pop(day, ()))
    first_month = core.calendar.period_start_day("month", first_day)
    for month in [m for m in core.month_cache if m < first_month]:
        del core.month_cache[month]
    dropped: list[str] = []
    for lead_id in [k for k, lead in core.leads.items() if _lead_before(lead, horizon)]:
        del core.leads[lead_id]
        dropped.append("L|" + lead_id)
    for deal_id in [k for k, deal in core.deals.items()
                    if deal.max_ts() < horizon and not deal.is_open()]:
        del core.deals[deal_id]
        dropped.append("D|" + deal_id)
    for customer_id in [k for k, c in core.customers.items() if _customer_before(c, horizon)]:
        del core.customers[customer_id]
        dropped.append("C|" + customer_id)
    return dropped


def bucket_key_expired(route_key: str, horizon: int) -> bool:
    """Whether an activity or spend record (``A|rep|utcday``, ``S|category|utcday``) is old.

    A UTC day ends before the horizon only if the next UTC day starts at or before it.
    """
    if not route_key.startswith(("A|", "S|")):
        return False
    utc_day = int(route_key.rsplit("|", 1)[1])
    return (utc_day + 1) * _DAY_US <= horizon


def _lead_before(lead, horizon: int) -> bool:
    return all(fact is None or fact.ts < horizon for fact in (lead.created, lead.qualified))


def _customer_before(customer, horizon: int) -> bool:
    if customer.won_at is not None and customer.won_at >= horizon:
        return False
    for sub in customer.subscriptions.values():
        if any(ts >= horizon for ts in sub.cancels):
            return False
        if sub.start_ts is None:
            continue
        if sub.start_ts >= horizon:
            return False
        end = sub.ended_at()
        if end is None or end >= horizon:
            return False
    return True
