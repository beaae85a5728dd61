"""What every source shares: its configuration, the roster, stage mapping, the answer shape."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from engine.config import GatewaySource
from gateway.delivery import UNKNOWN_USER, UNMAPPED_STAGE, Delivery, Reject
from gateway.object_state import ObjectStateStore
from engine.people.roster import Person
from gateway.roster import Attribution, UnknownUser

#: An answer: HTTP status, content type, body.
Answer = tuple[int, str, bytes]


@dataclass(slots=True)
class ItemResult:
    """What became of one item: ``accepted`` (its event id) or ``dead_lettered`` (why)."""

    status: str
    event_id: str | None = None
    reason: str | None = None
    detail: str | None = None


@dataclass(slots=True)
class MappingContext:
    attribution: Attribution
    zone: ZoneInfo
    currency: str
    states: ObjectStateStore | None = None
    now_ms: Any = None  # a clock, milliseconds since the epoch (tests pass their own)


class MappingFailure(Exception):
    """An item cannot be mapped: becomes a :class:`Reject` with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Source:
    """Base of the four kinds. Subclasses implement ``authenticate`` and ``map``."""

    def state_keys(self, body: bytes) -> list[str]:
        """The object-state keys a delivery will read and write (none: stateless source).

        Deliveries that share a key are handled one after the other, from mapping to Kafka's
        acknowledgement, so that each sees the state the one before committed; deliveries
        about other objects run concurrently.
        """
        return []

    def __init__(self, config: GatewaySource, context: MappingContext) -> None:
        self.config = config
        self.name = config.name
        self.context = context
        self.stages = config.stage_map()

    def authenticate(self, method: str, headers: Mapping[str, str], body: bytes) -> bool:
        raise NotImplementedError

    async def map(self, body: bytes) -> Delivery:
        raise NotImplementedError

    def answer(self, delivery: Delivery, results: list[ItemResult]) -> Answer:
        accepted = sum(r.status == "accepted" for r in results)
        document = {"accepted": accepted, "dead_lettered": len(results) - accepted,
                    "ignored": delivery.ignored}
        return 200, "application/json", orjson.dumps(document)

    # -- shared mapping helpers ------------------------------------------------------------------

    def person(self, user_id: object) -> Person:
        try:
            return self.context.attribution.person(self.name, user_id)
        except UnknownUser as exc:
            raise MappingFailure(UNKNOWN_USER, str(exc)) from None

    def stage(self, crm_stage: object) -> str | None:
        """The configured stage for a CRM stage id; ``None`` when this source maps no stages."""
        if crm_stage is None or crm_stage == "":
            return None
        if not self.stages:
            return None
        stage = self.stages.get(str(crm_stage))
        if stage is None:
            raise MappingFailure(UNMAPPED_STAGE,
                                 f"{self.name} stage {crm_stage} is not in this source's 'stages'")
        return stage

    def reject(self, failure: MappingFailure, origin: bytes) -> Reject:
        return Reject(failure.reason, failure.detail, origin)


def secret_equals(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def attributed(event: dict[str, Any], person: Person) -> dict[str, Any]:
    event["team_id"] = person.team_id
    event["rep_id"] = person.rep_id
    return event
