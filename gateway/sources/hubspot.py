"""HubSpot webhooks (``X-HubSpot-Signature-v3``): one property change per event, assembled.

Signature: https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests
(v3: base64 HMAC-SHA256, keyed with the app's client secret, of method + URI + body +
``X-HubSpot-Request-Timestamp``; the URI with the documented URL-encoded characters decoded;
timestamps older than 5 minutes refused). A signature seen before within the window is a
replay and is refused too. Payloads: https://developers.hubspot.com/docs/api/webhooks (a JSON
array of events with ``subscriptionType``, ``objectId``, ``occurredAt``, ``propertyName``,
``propertyValue``).

A ``deal.creation`` carries no properties, and a ``deal.created`` needs an owner, so each
object's state (its properties with their change times, whether its creation was emitted, the
events waiting for an owner) is assembled in :class:`gateway.object_state.ObjectStateStore`:

- ``deal.creation``: ``deal.created`` at the creation time once the owner is known.
- ``deal.propertyChange`` ``hubspot_owner_id``: emits a waiting ``deal.created`` (or a waiting
  close), else a ``deal.updated`` with the new team and rep; ``dealstage`` into a won or lost
  stage id (configured) is a ``deal.closed`` with the amount known at that point, another stage
  a ``deal.updated``; ``amount`` and ``closedate`` are ``deal.updated``. On a closed deal a new
  amount or owner corrects the close in place (:func:`gateway.ids.versioned_id`), other
  changes are ignored.
- ``contact.creation``: ``lead.created``, attributed when the owner is known.
- ``contact.propertyChange`` ``lifecyclestage`` into a qualified value (configured, default
  ``salesqualifiedlead``): ``lead.qualified`` once the owner is known.

Out of order: each change carries its own ``occurredAt``, and the engine orders lifecycle events
by it (SPEC §7.3), so a late change is emitted at its own time; the state keeps per property
the value of the latest change. Events of one delivery are applied in time order; at the same
instant (HubSpot sends one save's changes together) the creation first, then the other
properties, the stage, and the owner last, so that a won close sees the amount saved with it
and a ``deal.created`` waiting for its owner carries the stage and amount of the same save.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.delivery import (
    INVALID_VALUE,
    UNSUPPORTED_OBJECT,
    Delivery,
    Emit,
    Reject,
    Unreadable,
)
from gateway.ids import event_id, from_epoch_ms, money, versioned_id
from gateway.object_state import StateOverlay
from gateway.sources.base import MappingFailure, Source, attributed

MAX_AGE_MS = 5 * 60 * 1000
MAX_INSTANT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the contract's last instant
# Characters HubSpot's v3 instructions decode in the URI before signing.
_URI_DECODE = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
               "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}
_DEAL_PROPERTIES = ("dealstage", "amount", "closedate", "hubspot_owner_id")
_CONTACT_PROPERTIES = ("lifecyclestage", "hubspot_owner_id")


def signed_uri(uri: str) -> str:
    for encoded, char in _URI_DECODE.items():
        uri = uri.replace(encoded, char).replace(encoded.lower(), char)
    return uri


def request_source(method: str, uri: str, body: bytes) -> bytes:
    """Method + URI + body, the part of the signed string that v2 and v3 share."""
    return method.encode() + signed_uri(uri).encode() + body


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The ``X-HubSpot-Signature-v3`` value HubSpot sends for this request."""
    source = request_source(method, uri, body) + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


class HubSpotSource(Source):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen_signatures: OrderedDict[str, int] = OrderedDict()
        self.won = set(self.config.won_stages)
        self.lost = set(self.config.lost_stages)
        self.qualified = set(self.config.qualified_values)

    def _now_ms(self) -> int:
        clock = self.context.now_ms
        return int(clock()) if clock else int(time.time() * 1000)

    def authenticate(self, method: str, headers: Mapping[str, str], body: bytes) -> bool:
        signature = headers.get("X-HubSpot-Signature-v3")
        timestamp = headers.get("X-HubSpot-Request-Timestamp", "")
        if not signature or not timestamp.isdigit():
            return False
        now = self._now_ms()
        if abs(now - int(timestamp)) > MAX_AGE_MS:
            return False
        expected = signature_v3(self.config.secret or "", method, self.config.public_url or "",
                                body, timestamp)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return False
        while self.seen_signatures and next(iter(self.seen_signatures.values())) < now - MAX_AGE_MS:
            self.seen_signatures.popitem(last=False)
        if signature in self.seen_signatures:
            return False  # a replay of a request already served
        self.seen_signatures[signature] = now
        return True

    def state_keys(self, body: bytes) -> list[str]:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return []
        try:
            if isinstance(document, dict):
                document = workflow_events(document) if "properties" in document else [document]
        except Unreadable:
            return []  # map() answers 400
        if not isinstance(document, list):
            return []
        return sorted({self._key(e) for e in document if isinstance(e, dict)})

    def _key(self, event: dict) -> str:
        object_type = str(event.get("subscriptionType", "")).partition(".")[0]
        return f"{self.name}|{object_type}|{event.get('objectId')}"

    async def map(self, body: bytes) -> Delivery:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Unreadable(f"not JSON: {exc}") from None
        if isinstance(document, dict):
            document = workflow_events(document) if "properties" in document else [document]
        if not isinstance(document, list) or not all(isinstance(e, dict) for e in document):
            raise Unreadable("expected a JSON array of HubSpot events or a workflow's object")
        order = {"creation": 0, "propertyChange": 1}
        last = {"dealstage": 1, "hubspot_owner_id": 2}  # see the module's docstring
        document.sort(key=lambda e: (_int(e.get("occurredAt")),
                                     order.get(str(e.get("subscriptionType", "")).split(".")[-1], 2),
                                     last.get(str(e.get("propertyName")), 0)))
        work = StateOverlay(self.context.states)
        delivery = Delivery()
        for item in document:
            origin = orjson.dumps(item)
            try:
                delivery.items.extend(self._apply(item, origin, work))
            except MappingFailure as failure:
                delivery.items.append(self.reject(failure, origin))
            except (ValueError, TypeError) as exc:
                delivery.items.append(Reject(INVALID_VALUE, str(exc), origin))
        delivery.ignored = work.ignored
        delivery.state = work.records()
        delivery.commit = work.commit
        return delivery

    # -- one event -------------------------------------------------------------------------------

    def _apply(self, item: dict, origin: bytes, work: StateOverlay) -> list[Emit | Reject]:
        kind = str(item.get("subscriptionType", ""))
        object_type, _, change = kind.partition(".")
        object_id = item.get("objectId")
        at = _int(item.get("occurredAt"))
        if object_id is None or not 0 < at <= MAX_INSTANT_MS:
            raise MappingFailure(INVALID_VALUE, "a HubSpot event needs objectId and occurredAt")
        if object_type not in ("deal", "contact") or change not in ("creation", "propertyChange"):
            raise MappingFailure(UNSUPPORTED_OBJECT, f"HubSpot {kind} is not mapped")
        key = self._key(item)
        state = work.get(key)
        if change == "creation":
            first = state["created_at"] is None or at < state["created_at"]
            state["created_at"] = at if first else state["created_at"]
            if object_type == "deal":
                return self._deal_flush(object_id, state, origin)
            return [Emit(self._lead_created(object_id, state), origin)]
        name = item.get("propertyName")
        value = item.get("propertyValue")
        wanted = _DEAL_PROPERTIES if object_type == "deal" else _CONTACT_PROPERTIES
        if not isinstance(name, str) or name not in wanted:
            work.ignored += 1
            return []
        props = state["props"]
        if props.get(name) == [value, at]:
            work.ignored += 1  # this very change was applied before: a redelivery
            return []
        if name not in props or props[name][1] <= at:
            props[name] = [value, at]
        if object_type == "deal":
            return self._deal_change(object_id, state, name, value, at, origin)
        return self._contact_change(object_id, state, name, value, at, origin)

    def _deal_id(self, object_id: object) -> str:
        return f"{self.name}-deal-{object_id}"

    def _deal_change(self, object_id: object, state: dict, name: str, value: Any, at: int,
                     origin: bytes) -> list[Emit | Reject]:
        base: dict[str, Any] = {
            "event_id": event_id(self.name, "deal", object_id, name, value, at),
            "type": "deal.updated", "occurred_at": from_epoch_ms(at),
            "deal_id": self._deal_id(object_id)}
        stage_now = _prop(state, "dealstage")
        closed = stage_now in self.won or stage_now in self.lost
        if name == "hubspot_owner_id":
            if value in (None, ""):
                return []  # unassigned: the contract has no "no rep"; the last rep stays
            waiting = state["created_at"] is not None and not state["created_emitted"]
            if waiting or state["pending"]:
                return self._deal_flush(object_id, state, origin)
            if closed:
                return self._correct_close(object_id, state, at, origin)
            return [Emit(attributed(base, self.person(value)), origin)]
        if closed and name != "dealstage":
            # An edit of a closed deal: a deal.updated would re-open it (SPEC §7.3); a new
            # amount corrects the close instead, other edits change nothing we count.
            return self._correct_close(object_id, state, at, origin) if name == "amount" else []
        if name == "dealstage":
            if value in self.won or value in self.lost:
                close = {"kind": "close", "outcome": "won" if value in self.won else "lost",
                         "at": at, "amount": _prop(state, "amount"), "version": at}
                state["pending"].append(close)
                return self._deal_flush(object_id, state, origin)
            if state["props"]["dealstage"] == [value, at]:
                state["closed"] = None  # the latest stage is out of won/lost: re-opened
            base["stage"] = self.stage(value)
            return [Emit(base, origin)]
        if name == "amount":
            base["amount"] = money(value)
            return [Emit(base, origin)] if base["amount"] is not None else []
        if name == "closedate":
            if value in (None, ""):
                return []
            base["expected_close_at"] = from_epoch_ms(_int(value))
            return [Emit(base, origin)]
        return []

    def _correct_close(self, object_id: object, state: dict, at: int,
                       origin: bytes) -> list[Emit | Reject]:
        """The emitted close again, at its own time, with today's amount and owner (version
        ``at``: the greater id wins the engine's tie at that instant)."""
        closed = state.get("closed")
        if not closed:
            return []
        state["pending"].append({"kind": "close", "outcome": closed["outcome"],
                                 "at": closed["at"], "amount": _prop(state, "amount"),
                                 "version": at})
        return self._deal_flush(object_id, state, origin)

    def _deal_flush(self, object_id: object, state: dict, origin: bytes) -> list[Emit | Reject]:
        """Emit what waits for the owner: the creation, then closes, once the owner is known."""
        owner = _prop(state, "hubspot_owner_id")
        if owner in (None, ""):
            return []  # waits in state for the owner
        person = self.person(owner)
        out: list[Emit | Reject] = []
        if state["created_at"] is not None and not state["created_emitted"]:
            stage = _prop(state, "dealstage")
            closing = stage in self.won or stage in self.lost
            close_date = _prop(state, "closedate")
            out.append(Emit(attributed({
                "event_id": event_id(self.name, "deal", object_id, "created"),
                "type": "deal.created", "occurred_at": from_epoch_ms(state["created_at"]),
                "deal_id": self._deal_id(object_id), "amount": money(_prop(state, "amount")),
                "customer_id": f"{self.name}-deal-{object_id}",
                "stage": None if closing else self.stage(stage),
                "expected_close_at": from_epoch_ms(_int(close_date)) if close_date else None,
            }, person), origin))
            state["created_emitted"] = True
        for pending in state["pending"]:
            amount = money(pending["amount"])
            event = attributed({
                "event_id": versioned_id(self.name, pending.get("version", pending["at"]),
                                         "deal", object_id, "closed", pending["outcome"],
                                         pending["at"]),
                "type": "deal.closed", "occurred_at": from_epoch_ms(pending["at"]),
                "deal_id": self._deal_id(object_id), "outcome": pending["outcome"],
                "customer_id": f"{self.name}-deal-{object_id}",
                "opened_at": from_epoch_ms(state["created_at"]) if state["created_at"] else None,
            }, person)
            if pending["outcome"] == "won" or amount is not None:
                event["amount"] = amount if amount is not None else 0.0
            out.append(Emit(event, origin))
            state["closed"] = {"outcome": pending["outcome"], "at": pending["at"]}
        state["pending"] = []
        return out

    def _lead_created(self, object_id: object, state: dict) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": event_id(self.name, "contact", object_id, "created"),
            "type": "lead.created", "occurred_at": from_epoch_ms(state["created_at"]),
            "lead_id": f"{self.name}-contact-{object_id}", "source": self.name,
        }
        owner = _prop(state, "hubspot_owner_id")
        if owner not in (None, ""):
            attributed(event, self.person(owner))
        return event

    def _contact_change(self, object_id: object, state: dict, name: str, value: Any, at: int,
                        origin: bytes) -> list[Emit | Reject]:
        if name == "lifecyclestage":
            if value not in self.qualified:
                return []
            state["pending"].append({"kind": "qualified", "at": at})
        owner = _prop(state, "hubspot_owner_id")
        if owner in (None, "") or not state["pending"]:
            return []
        person = self.person(owner)
        out: list[Emit | Reject] = []
        for pending in state["pending"]:
            out.append(Emit(attributed({
                "event_id": event_id(self.name, "contact", object_id, "qualified", pending["at"]),
                "type": "lead.qualified", "occurred_at": from_epoch_ms(pending["at"]),
                "lead_id": f"{self.name}-contact-{object_id}",
            }, person), origin))
        state["pending"] = []
        return out


def workflow_events(document: dict) -> list[dict]:
    """A workflow "Send a webhook" delivery (the whole object) as the events it amounts to.

    The workflow posts the object as the object API returns it
    (https://developers.hubspot.com/docs/methods/workflows/webhook_information): the legacy
    form (``dealId`` or ``vid``, ``properties`` of ``{value, timestamp}``) or the v3 form
    (``id``, ``properties`` of plain values, ``createdAt``/``updatedAt``). Each tracked property
    becomes a property change at its own timestamp (the object's last change when it has
    none) and the creation date a creation, so that the same assembly applies and a property
    already known at that time is a redelivery.
    """
    properties = document.get("properties")
    if not isinstance(properties, dict):
        raise Unreadable("a workflow delivery's 'properties' must be an object")
    tracked: tuple[str, ...]
    if "dealId" in document or "dealstage" in properties:
        object_type, object_id = "deal", document.get("dealId", document.get("id"))
        tracked = _DEAL_PROPERTIES
    elif "vid" in document or "lifecyclestage" in properties or "email" in properties:
        object_type, object_id = "contact", document.get("vid", document.get("id"))
        tracked = _CONTACT_PROPERTIES
    else:
        object_type, object_id = "object", document.get("id")
        tracked = ()

    def value_and_time(name: str) -> tuple[Any, int]:
        entry = properties.get(name)
        if isinstance(entry, dict):  # legacy: {"value": ..., "timestamp": ms}
            return entry.get("value"), _int(entry.get("timestamp"))
        return entry, 0

    modified = (_int(value_and_time("hs_lastmodifieddate")[0])
                or _ms(document.get("updatedAt")) or _int(value_and_time("lastmodifieddate")[0]))
    created = (_int(value_and_time("createdate")[0]) or _ms(document.get("createdAt")))
    base = {"objectId": object_id, "portalId": document.get("portalId"), "workflow": True}
    events: list[dict] = []
    if created:
        events.append({**base, "subscriptionType": f"{object_type}.creation",
                       "occurredAt": created})
    for name in tracked:
        value, at = value_and_time(name)
        if value not in (None, ""):
            events.append({**base, "subscriptionType": f"{object_type}.propertyChange",
                           "occurredAt": at or modified or created, "propertyName": name,
                           "propertyValue": value})
    if not events:
        events.append({**base, "subscriptionType": f"{object_type}.workflow",
                       "occurredAt": modified or created})
    return events


def _ms(text: object) -> int:
    """An ISO 8601 instant (the v3 object API's ``createdAt``) in ms since the epoch."""
    if not isinstance(text, str) or not text:
        return 0
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _prop(state: dict, name: str) -> Any:
    entry = state["props"].get(name)
    return entry[0] if entry else None


def _int(value: object) -> int:
    """A millisecond instant (number or digits); 0 when it is none or outside the contract's
    years 1970–9999 (0 is then refused as "needs occurredAt", or ignored)."""
    if isinstance(value, bool):
        return 0
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0
    return number if 0 <= number <= MAX_INSTANT_MS else 0
