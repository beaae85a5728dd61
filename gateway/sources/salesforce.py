"""Salesforce Outbound Messages (SOAP) for Opportunity, Lead and Task.

Shape: https://developer.salesforce.com/docs/platform/api/guide/sforce-api-om-outboundmessaging-wsdl.html
(``notifications`` with ``OrganizationId``, ``ActionId``, up to 100 ``Notification`` elements,
each an ``Id`` and an ``sObject`` whose fields are those chosen for the message; the answer is a
``notificationsResponse`` with ``<Ack>true</Ack>``). Salesforce retries a message until it is
acknowledged, so the ``Ack`` goes out only once Kafka has acknowledged the events.

Security: the XML is parsed with ``defusedxml`` (no DTDs, so no entity expansion and no external
entities: an entity bomb is a 400), and the ``OrganizationId`` must be the configured org id
(15- or 18-character form), else 401. Outbound messages cannot carry a secret header; run the
endpoint behind TLS and, if possible, an allow-list of Salesforce's addresses.

Each notification is the object's state after a save (the fields configured for the message):

- Opportunity: ``deal.created`` when ``CreatedDate`` equals ``LastModifiedDate``, else
  ``deal.updated`` with stage, amount, close date and owner at ``LastModifiedDate``;
  ``IsClosed`` is a ``deal.closed`` (``IsWon``) at the ``LastModifiedDate`` of the first message
  that showed it closed (kept in the state topic): a later edit of the closed opportunity
  corrects that close in place (see :func:`gateway.ids.versioned_id`).
- Lead: ``lead.created`` on creation; ``lead.qualified`` when ``Status`` is a configured
  qualified value (default ``Qualified``) or ``IsConverted`` is true.
- Task: ``activity.logged`` once ``IsClosed`` (or ``Status`` ``Completed``), at
  ``CompletedDateTime`` (else ``LastModifiedDate``); the type from ``TaskSubtype``/``Type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring, tostring

from gateway.delivery import INVALID_VALUE, UNSUPPORTED_OBJECT, Delivery, Emit, Unreadable
from gateway.ids import (
    epoch_ms,
    event_id,
    local_midnight,
    money,
    parse_crm_time,
    versioned_id,
)
from gateway.object_state import StateOverlay
from gateway.sources.base import Answer, ItemResult, MappingFailure, Source, attributed

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ACK = (b'<?xml version="1.0" encoding="UTF-8"?>'
       b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
       b'<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
       b'<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>')
ACTIVITY_TYPES = {"call": "call", "email": "email", "listemail": "email", "meeting": "meeting",
                  "demo": "demo"}


class SalesforceSource(Source):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.qualified = set(self.config.qualified_values)
        self._org_checked: str | None = None

    def authenticate(self, method: str, headers: Mapping[str, str], body: bytes) -> bool:
        return True  # the organisation id inside the message is checked in map()

    def _notifications(self, body: bytes) -> Element:
        try:
            root = fromstring(body, forbid_dtd=True)
        except (ParseError, DefusedXmlException, ValueError) as exc:
            raise Unreadable(f"not readable XML: {type(exc).__name__}") from None
        notifications = root.find(f"{{{SOAP}}}Body/{{{OUTBOUND}}}notifications")
        if notifications is None:
            raise Unreadable("not a Salesforce outbound message (no notifications element)")
        return notifications

    def state_keys(self, body: bytes) -> list[str]:
        """Opportunities keep their first close time in the state topic (see ``_opportunity``)."""
        try:
            notifications = self._notifications(body)
        except Unreadable:
            return []
        keys = set()
        for sobject in notifications.iter(f"{{{OUTBOUND}}}sObject"):
            if (sobject.get(f"{{{XSI}}}type") or "").endswith("Opportunity"):
                record_id = next((c.text for c in sobject if c.tag.endswith("}Id")), None)
                if record_id:
                    keys.add(self._key(record_id.strip()))
        return sorted(keys)

    def _key(self, record_id: str) -> str:
        return f"{self.name}|opp|{record_id}"

    async def map(self, body: bytes) -> Delivery:
        notifications = self._notifications(body)
        org = (notifications.findtext(f"{{{OUTBOUND}}}OrganizationId") or "").strip()
        expected = self.config.org_id or ""
        if not org or org[:15] != expected[:15]:
            from gateway.delivery import Unauthorized
            raise Unauthorized()
        delivery = Delivery()
        work = StateOverlay(self.context.states)
        for notification in notifications.findall(f"{{{OUTBOUND}}}Notification"):
            origin = tostring(notification)
            sobject = notification.find(f"{{{OUTBOUND}}}sObject")
            try:
                if sobject is None:
                    raise MappingFailure(INVALID_VALUE, "a notification without sObject")
                events = self._events(sobject, work)
            except MappingFailure as failure:
                delivery.items.append(self.reject(failure, origin))
                continue
            except (ValueError, TypeError, KeyError) as exc:
                delivery.items.append(self.reject(MappingFailure(INVALID_VALUE, str(exc)), origin))
                continue
            if not events:
                delivery.ignored += 1
            delivery.items.extend(Emit(event, origin) for event in events)
        delivery.state = work.records()
        delivery.commit = work.commit
        return delivery

    def answer(self, delivery: Delivery, results: list[ItemResult]) -> Answer:
        return 200, "text/xml; charset=utf-8", ACK

    # -- mapping ---------------------------------------------------------------------------------

    def _events(self, sobject: Element, work: StateOverlay) -> list[dict[str, Any]]:
        object_type = (sobject.get(f"{{{XSI}}}type") or "").rpartition(":")[2]
        fields = {child.tag.rpartition("}")[2]: (child.text or "").strip()
                  for child in sobject if child.get(f"{{{XSI}}}nil") != "true"}
        if not fields.get("Id"):
            raise MappingFailure(INVALID_VALUE, f"a {object_type or 'record'} without Id")
        if object_type == "Opportunity":
            return self._opportunity(fields, work)
        if object_type == "Lead":
            return self._lead(fields)
        if object_type == "Task":
            return self._task(fields)
        raise MappingFailure(UNSUPPORTED_OBJECT, f"Salesforce {object_type or '?'} is not mapped")

    def _opportunity(self, f: dict[str, str], work: StateOverlay) -> list[dict[str, Any]]:
        record_id = f["Id"]
        modified = parse_crm_time(f["LastModifiedDate"])
        created = parse_crm_time(f["CreatedDate"]) if f.get("CreatedDate") else None
        person = self.person(f.get("OwnerId"))
        closed = f.get("IsClosed") == "true"
        deal_id = f"{self.name}-opp-{record_id}"
        customer = f"{self.name}-acct-{f['AccountId']}" if f.get("AccountId") else deal_id
        fields: dict[str, Any] = {
            "deal_id": deal_id, "amount": money(f.get("Amount")),
            "stage": None if closed else self.stage(f.get("StageName")),
            "expected_close_at": (local_midnight(f["CloseDate"], self.context.zone)
                                  if f.get("CloseDate") else None),
        }
        events = []
        if created is not None and created == modified:
            events.append(attributed({
                "event_id": event_id(self.name, "opp", record_id, "created"),
                "type": "deal.created", "occurred_at": created, "customer_id": customer,
                **fields}, person))
        elif not closed:
            events.append(attributed({
                "event_id": event_id(self.name, "opp", record_id, "updated", modified),
                "type": "deal.updated", "occurred_at": modified, **fields}, person))
        state = work.get(self._key(record_id))
        if not closed:
            state["closed"] = None
        else:
            # The first message that shows the close fixes its time; a later edit of the closed
            # opportunity (an amount, an owner) is the same close corrected, versioned by its
            # LastModifiedDate so that the latest correction wins the engine's tie.
            won = f.get("IsWon") == "true"
            outcome = "won" if won else "lost"
            previous = state.get("closed")
            closed_at = (previous["at"] if previous and previous["outcome"] == outcome
                         else modified)
            state["closed"] = {"outcome": outcome, "at": closed_at}
            close = attributed({
                "event_id": versioned_id(self.name, epoch_ms(modified), "opp", record_id,
                                         "closed", outcome, closed_at),
                "type": "deal.closed", "occurred_at": closed_at, "deal_id": deal_id,
                "outcome": outcome, "customer_id": customer,
                "opened_at": created}, person)
            if won or fields["amount"] is not None:
                close["amount"] = fields["amount"] if fields["amount"] is not None else 0.0
            events.append(close)
        return events

    def _lead(self, f: dict[str, str]) -> list[dict[str, Any]]:
        record_id = f["Id"]
        modified = parse_crm_time(f["LastModifiedDate"])
        created = parse_crm_time(f["CreatedDate"]) if f.get("CreatedDate") else None
        person = self.person(f.get("OwnerId"))
        lead_id = f"{self.name}-lead-{record_id}"
        events = []
        if created is not None and created == modified:
            events.append(attributed({
                "event_id": event_id(self.name, "lead", record_id, "created"),
                "type": "lead.created", "occurred_at": created, "lead_id": lead_id,
                "source": f.get("LeadSource") or self.name}, person))
        if f.get("Status") in self.qualified or f.get("IsConverted") == "true":
            events.append(attributed({
                "event_id": event_id(self.name, "lead", record_id, "qualified", modified),
                "type": "lead.qualified", "occurred_at": modified, "lead_id": lead_id}, person))
        return events

    def _task(self, f: dict[str, str]) -> list[dict[str, Any]]:
        if f.get("IsClosed") != "true" and f.get("Status") != "Completed":
            return []
        when = f.get("CompletedDateTime") or f["LastModifiedDate"]
        kind = (f.get("TaskSubtype") or f.get("Type") or "").replace(" ", "").lower()
        what, who = f.get("WhatId", ""), f.get("WhoId", "")
        duration = f.get("CallDurationInSeconds")
        return [attributed({
            "event_id": event_id(self.name, "task", f["Id"], "done"),
            "type": "activity.logged", "occurred_at": parse_crm_time(when),
            "activity_type": ACTIVITY_TYPES.get(kind, "other"),
            "deal_id": f"{self.name}-opp-{what}" if what.startswith("006") else None,
            "lead_id": f"{self.name}-lead-{who}" if who.startswith("00Q") else None,
            "duration_seconds": int(duration) if duration else None,
        }, self.person(f.get("OwnerId")))]
