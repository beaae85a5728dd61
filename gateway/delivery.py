"""What a source mapper makes of one delivery: events to produce and items to dead-letter.

Why plain data: mappers stay pure (bytes and state in, this out), so that every CRM's mapping
is tested without a server or a broker, and the server alone decides how to answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Dead-letter reasons of the gateway (``kpi-reason``), beside the decoder's SPEC §1.3 codes.
UNKNOWN_USER = "unknown_user"
UNMAPPED_STAGE = "unmapped_stage"
UNSUPPORTED_OBJECT = "unsupported_object"
INVALID_EVENT = "invalid_event"
INVALID_VALUE = "invalid_value"


class Unreadable(ValueError):
    """The body cannot be read at all (not JSON, not XML, not the CRM's shape): HTTP 400."""


class Unauthorized(Exception):
    """Authentication failed: HTTP 401 without detail."""


@dataclass(slots=True)
class Emit:
    """One contract event to produce; ``origin`` is the CRM item it came from.

    ``event`` is the mapped JSON object, or for the contract source the line's own bytes
    (produced as they came once the decoder accepted them).
    """

    event: dict[str, Any] | bytes
    origin: bytes


@dataclass(slots=True)
class Reject:
    """A readable item that cannot be mapped: dead-lettered with its original bytes."""

    reason: str
    detail: str
    origin: bytes


@dataclass(slots=True)
class Delivery:
    """The outcome of mapping one delivery.

    ``items`` in delivery order; ``ignored`` counts readable changes that carry nothing the
    KPIs use (a renamed deal); ``state`` holds compacted-topic records ``(key, value)`` to
    write with the events, and ``commit`` is called once Kafka has acknowledged everything, so
    that in-memory state moves only with what Kafka holds.
    """

    items: list[Emit | Reject] = field(default_factory=list)
    ignored: int = 0
    state: list[tuple[bytes, bytes]] = field(default_factory=list)
    commit: Callable[[], None] | None = None
    context: Any = None  # what the source needs to build its answer (e.g. per-line results)
