"""Pipedrive webhooks v2 (``meta``, ``data``, ``previous``), with HTTP Basic authentication.

Payloads: https://pipedrive.readme.io/docs/guide-for-webhooks-v2 (and the v2 migration guide).
Each delivery is complete on its own: ``data`` is the object after the change, ``previous``
the old values of the fields that changed, so no state is kept.

- ``deal`` ``create``: ``deal.created`` at ``add_time`` (owner, value, stage, expected close
  date, organisation as the customer); a deal created already won or lost also closes.
- ``deal`` ``change``: ``status`` to won/lost is a ``deal.closed`` at ``won_time``/``lost_time``;
  a change of stage, value, expected close date or owner (or a re-open) is one
  ``deal.updated`` at ``update_time`` carrying what changed. Other edits (a title) are ignored.
- ``activity`` done (created done, or ``done`` changed to true): ``activity.logged`` at
  ``marked_as_done_time``.
- ``lead`` ``create``: ``lead.created`` at ``add_time``.
- Anything else (persons, deletions, ...): dead-lettered as ``unsupported_object``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.delivery import INVALID_VALUE, UNSUPPORTED_OBJECT, Delivery, Emit, Unreadable
from gateway.ids import (
    epoch_ms,
    event_id,
    local_midnight,
    money,
    parse_crm_time,
    versioned_id,
)
from gateway.sources.base import MappingFailure, Source, attributed, secret_equals

ACTIVITY_TYPES = {"call": "call", "email": "email", "meeting": "meeting", "demo": "demo"}
DEAL_FIELDS = ("stage_id", "value", "expected_close_date", "owner_id", "user_id", "status")


class PipedriveSource(Source):
    def authenticate(self, method: str, headers: Mapping[str, str], body: bytes) -> bool:
        scheme, _, encoded = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secret_equals(user, self.config.username) & secret_equals(
            password, self.config.secret)

    async def map(self, body: bytes) -> Delivery:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Unreadable(f"not JSON: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("meta"), dict):
            raise Unreadable("not a Pipedrive webhook v2 delivery (no 'meta' object)")
        meta = document["meta"]
        data = document.get("data")
        previous = document.get("previous") or {}
        delivery = Delivery()
        try:
            if not isinstance(data, dict) or not isinstance(previous, dict):
                raise MappingFailure(UNSUPPORTED_OBJECT,
                                     f"{meta.get('action')} {meta.get('entity')} carries no data")
            events = self._events(meta, data, previous)
        except MappingFailure as failure:
            delivery.items.append(self.reject(failure, body))
            return delivery
        except (ValueError, TypeError) as exc:
            delivery.items.append(self.reject(MappingFailure(INVALID_VALUE, str(exc)), body))
            return delivery
        if not events:
            delivery.ignored = 1
        delivery.items.extend(Emit(event, body) for event in events)
        return delivery

    def _events(self, meta: dict, data: dict, previous: dict) -> list[dict[str, Any]]:
        entity = meta.get("entity") or meta.get("object")
        action = meta.get("action")
        if entity == "deal" and action in ("create", "added"):
            return self._deal_created(data)
        if entity == "deal" and action in ("change", "updated"):
            return self._deal_changed(data, previous)
        if entity == "activity" and action in ("create", "change", "added", "updated"):
            return self._activity(data, previous, action)
        if entity == "lead" and action in ("create", "added"):
            return [self._lead_created(data)]
        raise MappingFailure(UNSUPPORTED_OBJECT, f"pipedrive {action} {entity} is not mapped")

    # -- deals -----------------------------------------------------------------------------------

    def _deal_id(self, data: dict) -> str:
        if data.get("id") is None:
            raise MappingFailure(INVALID_VALUE, "the deal has no id")
        return f"{self.name}-deal-{data['id']}"

    def _owner(self, data: dict) -> Any:
        return data.get("owner_id", data.get("user_id"))

    def _customer(self, data: dict) -> str:
        if data.get("org_id") is not None:
            return f"{self.name}-org-{data['org_id']}"
        if data.get("person_id") is not None:
            return f"{self.name}-person-{data['person_id']}"
        return f"{self.name}-deal-{data.get('id')}"

    def _close_date(self, data: dict) -> str | None:
        day = data.get("expected_close_date")
        return local_midnight(day, self.context.zone) if day else None

    def _deal_created(self, data: dict) -> list[dict[str, Any]]:
        deal_id = self._deal_id(data)
        person = self.person(self._owner(data))
        occurred_at = parse_crm_time(data["add_time"])
        status = data.get("status")
        created = attributed({
            "event_id": event_id(self.name, "deal", data["id"], "created"),
            "type": "deal.created", "occurred_at": occurred_at, "deal_id": deal_id,
            "amount": money(data.get("value")), "currency": data.get("currency"),
            "customer_id": self._customer(data),
            "stage": self.stage(data.get("stage_id")) if status in (None, "open") else None,
            "expected_close_at": self._close_date(data),
        }, person)
        events = [created]
        if status in ("won", "lost"):
            events.append(self._closed(data, person))
        return events

    def _closed(self, data: dict, person: Any) -> dict[str, Any]:
        """The close at ``won_time``/``lost_time``; versioned by ``update_time``, so that an
        edit of the closed deal (its value, its owner) corrects the close in its window."""
        status = data["status"]
        when = data.get(f"{status}_time") or data.get("close_time") or data.get("update_time")
        if not when:
            raise MappingFailure(INVALID_VALUE, f"a {status} deal without {status}_time")
        occurred_at = parse_crm_time(when)
        version = epoch_ms(parse_crm_time(data.get("update_time") or when))
        event = attributed({
            "event_id": versioned_id(self.name, version, "deal", data["id"], "closed", status,
                                     occurred_at),
            "type": "deal.closed", "occurred_at": occurred_at, "deal_id": self._deal_id(data),
            "outcome": status, "customer_id": self._customer(data),
            "opened_at": parse_crm_time(data["add_time"]) if data.get("add_time") else None,
        }, person)
        amount = money(data.get("value"))
        if amount is not None or status == "won":
            event["amount"] = amount if amount is not None else 0.0
            event["currency"] = data.get("currency")
        return event

    def _deal_changed(self, data: dict, previous: dict) -> list[dict[str, Any]]:
        changed = {name for name in DEAL_FIELDS if name in previous}
        status = data.get("status")
        if "status" in changed and status in ("won", "lost"):
            return [self._closed(data, self.person(self._owner(data)))]
        reopened = "status" in changed and status == "open"
        if status in ("won", "lost") and "status" not in changed:
            # An edit of a closed deal: a deal.updated would re-open it (SPEC §7.3). A new value
            # or owner corrects the close instead; other edits change nothing we count.
            if changed & {"value", "owner_id", "user_id"}:
                return [self._closed(data, self.person(self._owner(data)))]
            return []
        if not changed - {"status"} and not reopened:
            return []
        occurred_at = parse_crm_time(data["update_time"])
        event: dict[str, Any] = {
            "event_id": event_id(self.name, "deal", data["id"], "updated", occurred_at,
                                 *sorted(changed)),
            "type": "deal.updated", "occurred_at": occurred_at, "deal_id": self._deal_id(data),
        }
        if reopened or "stage_id" in changed:
            event["stage"] = self.stage(data.get("stage_id"))
        if reopened or "value" in changed:
            event["amount"] = money(data.get("value"))
            event["currency"] = data.get("currency")
        if reopened or "expected_close_date" in changed:
            event["expected_close_at"] = self._close_date(data)
        if reopened or changed & {"owner_id", "user_id"}:
            attributed(event, self.person(self._owner(data)))
        return [event]

    # -- activities and leads --------------------------------------------------------------------

    def _activity(self, data: dict, previous: dict, action: str) -> list[dict[str, Any]]:
        became_done = data.get("done") is True and (
            action in ("create", "added") or previous.get("done") is False)
        if not became_done:
            return []
        if data.get("id") is None:
            raise MappingFailure(INVALID_VALUE, "the activity has no id")
        when = data.get("marked_as_done_time") or data.get("update_time")
        if not when:
            raise MappingFailure(INVALID_VALUE, "a done activity without marked_as_done_time")
        person = self.person(self._owner(data))
        event = attributed({
            "event_id": event_id(self.name, "activity", data.get("id"), "done"),
            "type": "activity.logged", "occurred_at": parse_crm_time(when),
            "activity_type": ACTIVITY_TYPES.get(str(data.get("type", "")).lower(), "other"),
            "deal_id": f"{self.name}-deal-{data['deal_id']}" if data.get("deal_id") else None,
            "lead_id": f"{self.name}-lead-{data['lead_id']}" if data.get("lead_id") else None,
            "duration_seconds": _duration_seconds(data.get("duration")),
        }, person)
        return [event]

    def _lead_created(self, data: dict) -> dict[str, Any]:
        if data.get("id") is None:
            raise MappingFailure(INVALID_VALUE, "the lead has no id")
        person = self.person(self._owner(data))
        return attributed({
            "event_id": event_id(self.name, "lead", data["id"], "created"),
            "type": "lead.created", "occurred_at": parse_crm_time(data["add_time"]),
            "lead_id": f"{self.name}-lead-{data['id']}",
            "source": data.get("source_name") or data.get("origin") or self.name,
        }, person)


def _duration_seconds(text: object) -> int | None:
    """Pipedrive's ``HH:MM`` (or ``HH:MM:SS``) duration in seconds."""
    if not isinstance(text, str) or not text:
        return None
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.append(0)
    return parts[0] * 3600 + parts[1] * 60 + parts[2]
