"""The typed CRM event that the KPI core consumes, and the rejection of one that is invalid.

Why a flat slotted class: the core touches a handful of attributes per event at hundreds of
thousands of events per second, and one shape for all nine types keeps routing and storage
simple. Money is held in integer micro-units of the reporting currency and instants in integer
microseconds since the Unix epoch (UTC): sums are then exact, so results cannot depend on the
order in which events arrive or on how they are split across workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MICRO: Final = 1_000_000  # micro-units per currency unit, microseconds per second

EVENT_TYPES: Final[tuple[str, ...]] = (
    "lead.created",
    "lead.qualified",
    "activity.logged",
    "deal.created",
    "deal.updated",
    "deal.closed",
    "subscription.started",
    "subscription.cancelled",
    "spend.recorded",
)
ACTIVITY_TYPES: Final[tuple[str, ...]] = ("call", "email", "meeting", "demo", "other")
OUTCOMES: Final[tuple[str, ...]] = ("won", "lost")
SPEND_CATEGORIES: Final[tuple[str, ...]] = ("marketing", "sales")

REASON_CODES = (
    "malformed_json",
    "not_an_object",
    "unknown_type",
    "missing_field",
    "invalid_field",
    "unsupported_schema_version",
    "currency_mismatch",
    "too_large",
    "future_timestamp",
    "too_late",
)


@dataclass(slots=True, init=False)
class Event:
    """One valid CRM event (SPEC §1). Optional fields that were absent or null are ``None``.

    ``ts`` is ``occurred_at``; ``amount`` carries ``amount`` (deal and spend events) and
    ``mrr`` carries a subscription's monthly recurring revenue, both in micro-units.
    ``stage`` and ``expected_close`` (µs) are the pipeline fields of ``deal.created`` and
    ``deal.updated`` (SPEC §7); ``stage`` is ``None`` when no stages are configured.
    The ``__init__`` is written out (not generated) so that the compiled build compiles it:
    an event is made for every message.
    """

    event_id: str
    type: str
    ts: int
    team_id: str | None = None
    rep_id: str | None = None
    lead_id: str | None = None
    deal_id: str | None = None
    customer_id: str | None = None
    subscription_id: str | None = None
    activity_type: str | None = None
    outcome: str | None = None
    category: str | None = None
    amount: int | None = None
    mrr: int | None = None
    opened_at: int | None = None
    stage: str | None = None
    expected_close: int | None = None

    def __init__(self, event_id: str, type: str, ts: int, team_id: str | None = None,
                 rep_id: str | None = None, lead_id: str | None = None,
                 deal_id: str | None = None, customer_id: str | None = None,
                 subscription_id: str | None = None, activity_type: str | None = None,
                 outcome: str | None = None, category: str | None = None,
                 amount: int | None = None, mrr: int | None = None,
                 opened_at: int | None = None, stage: str | None = None,
                 expected_close: int | None = None) -> None:
        self.event_id = event_id
        self.type = type
        self.ts = ts
        self.team_id = team_id
        self.rep_id = rep_id
        self.lead_id = lead_id
        self.deal_id = deal_id
        self.customer_id = customer_id
        self.subscription_id = subscription_id
        self.activity_type = activity_type
        self.outcome = outcome
        self.category = category
        self.amount = amount
        self.mrr = mrr
        self.opened_at = opened_at
        self.stage = stage
        self.expected_close = expected_close


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message is not a valid event: a SPEC §1.3 reason code and a detail naming the field."""

    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REASON_CODES:
            raise ValueError(f"unknown reason code {self.reason!r}")


def to_micros(value: int | float) -> int:
    """Money or seconds as integer millionths, rounded to nearest (exact for ≤ 6 decimals).

    An integer stays exact however large (``int | float``: a ``float`` annotation would make
    the compiled build convert it first)."""
    return round(value * MICRO)


_ROW_FIELDS = (
    "event_id", "type", "ts", "team_id", "rep_id", "lead_id", "deal_id", "customer_id",
    "subscription_id", "activity_type", "outcome", "category", "amount", "mrr", "opened_at",
    "stage", "expected_close",
)


def event_to_row(event: Event) -> list:
    """A compact, JSON-serialisable form for durable storage (table values, snapshots)."""
    return [getattr(event, name) for name in _ROW_FIELDS]


def event_from_row(row: list) -> Event:
    """Inverse of :func:`event_to_row` (also of v1 rows, which lack the last two fields)."""
    return Event(*row)
