"""Which state shard an event belongs to: the key that the live engine partitions by.

Why: KPI state is exact across workers only when every event that can affect one entity's
result lands on the same partition. Leads and deals are self-contained (a deal's whole
lifecycle, ``deal.updated`` included, is on one partition, SPEC §7.3); subscriptions and
customer acquisitions are keyed by customer, because "customers active at an instant" and
"new customers" are per-customer questions. A won ``deal.closed`` therefore has two aspects:
its close counts for the deal (routed by ``deal_id``) and it may acquire a customer (routed by
``customer_id``). Activities and spend have no entity; they are grouped per rep (or category)
and UTC day so that a batch rewrites few durable records.
"""

from __future__ import annotations

from typing import Final

from engine.event import MICRO, Event

ASPECT_PRIMARY: Final = "primary"          # the event's effect on its own entity; counted once here
ASPECT_ACQUISITION: Final = "acquisition"  # a won close's effect on its customer's acquired_at

_DAY_US: Final = 86_400 * MICRO


def routes(event: Event) -> list[tuple[str, str]]:
    """``(route_key, aspect)`` pairs for an event; the first is always the primary aspect."""
    t = event.type
    if t == "lead.created" or t == "lead.qualified":
        return [(f"L|{event.lead_id}", ASPECT_PRIMARY)]
    if t == "activity.logged":
        return [(f"A|{event.rep_id}|{event.ts // _DAY_US}", ASPECT_PRIMARY)]
    if t == "deal.created" or t == "deal.updated":
        return [(f"D|{event.deal_id}", ASPECT_PRIMARY)]
    if t == "deal.closed":
        primary = (f"D|{event.deal_id}", ASPECT_PRIMARY)
        if event.outcome == "won" and event.customer_id is not None:
            return [primary, (f"C|{event.customer_id}", ASPECT_ACQUISITION)]
        return [primary]
    if t == "subscription.started" or t == "subscription.cancelled":
        return [(f"C|{event.customer_id}", ASPECT_PRIMARY)]
    if t == "spend.recorded":
        return [(f"S|{event.category}|{event.ts // _DAY_US}", ASPECT_PRIMARY)]
    raise ValueError(f"unroutable event type {t!r}")
