"""CRM webhook payloads for the gateway tests, written from each CRM's public documentation.

Each builder cites the page its shape comes from; values are made up. Builders take the few
values a test varies, so a redelivery is the same call twice and an out-of-order sequence is a
shuffled list.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from gateway.sources.hubspot import signature_v3

# --- Pipedrive ------------------------------------------------------------------------------------
# Shape: https://pipedrive.readme.io/docs/guide-for-webhooks-v2 and
# https://pipedrive.readme.io/docs/webhooks-v2-migration-guide (v2: "meta" with action, entity,
# entity_id, version "2.0", timestamp; "data" the object after the change; "previous" the old
# values of the changed fields, null on create). Deal fields as in API v2 (owner_id, value,
# currency, stage_id, status, add_time, update_time, won_time, lost_time, expected_close_date).


def pipedrive_meta(action: str, entity: str, entity_id: Any, attempt: int = 1) -> dict:
    return {"action": action, "entity": entity, "entity_id": str(entity_id), "version": "2.0",
            "company_id": "12882925", "user_id": "18487521", "id": f"{entity}-{entity_id}",
            "webhook_id": "99", "webhook_owner_id": "18487521", "attempt": attempt,
            "host": "company.pipedrive.com", "timestamp": "2026-03-02T10:00:00Z",
            "change_source": "app"}


def pipedrive_deal(deal_id: int = 1, *, owner: int = 18487521, value: float = 1200.0,
                   stage_id: int = 1, status: str = "open", currency: str = "EUR",
                   add_time: str = "2026-03-02T09:00:00Z",
                   update_time: str = "2026-03-02T09:00:00Z", **extra: Any) -> dict:
    deal = {"id": deal_id, "title": f"Deal {deal_id}", "value": value, "currency": currency,
            "status": status, "stage_id": stage_id, "pipeline_id": 1, "owner_id": owner,
            "person_id": 3, "org_id": 2, "add_time": add_time, "update_time": update_time,
            "expected_close_date": "2026-04-30", "won_time": None, "lost_time": None}
    deal.update(extra)
    return deal


def pipedrive_delivery(action: str, data: dict, previous: dict | None = None,
                       entity: str = "deal", attempt: int = 1) -> bytes:
    return orjson.dumps({"meta": pipedrive_meta(action, entity, data.get("id"), attempt),
                         "data": data, "previous": previous})


def pipedrive_activity(activity_id: int = 7, *, done: bool = True, kind: str = "call",
                       owner: int = 18487521, deal_id: int | None = 1) -> dict:
    return {"id": activity_id, "subject": "Call", "type": kind, "done": done,
            "owner_id": owner, "deal_id": deal_id, "lead_id": None, "duration": "00:30",
            "add_time": "2026-03-02T09:30:00Z", "update_time": "2026-03-02T11:00:00Z",
            "marked_as_done_time": "2026-03-02T11:00:00Z" if done else None}


def pipedrive_lead(lead_id: str = "adf21080-0e10-11eb-879b-05d71fb426ec",
                   owner: int = 18487521) -> dict:
    return {"id": lead_id, "title": "Lead", "owner_id": owner, "person_id": 3,
            "organization_id": None, "source_name": "Web forms",
            "add_time": "2026-03-01T08:00:00Z", "update_time": "2026-03-01T08:00:00Z"}


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- HubSpot --------------------------------------------------------------------------------------
# Shape: https://developers.hubspot.com/docs/api/webhooks (a JSON array of events: eventId,
# subscriptionId, portalId, appId, occurredAt in ms, subscriptionType such as deal.creation or
# deal.propertyChange, attemptNumber, objectId, changeSource, propertyName, propertyValue).
# Signature: https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests


def hubspot_event(kind: str, object_id: int, at_ms: int, prop: str | None = None,
                  value: Any = None, event_id: int = 100, attempt: int = 0) -> dict:
    event = {"eventId": event_id, "subscriptionId": 25, "portalId": 62515, "appId": 54321,
             "occurredAt": at_ms, "subscriptionType": kind, "attemptNumber": attempt,
             "objectId": object_id, "changeSource": "CRM", "changeFlag": "NEW"}
    if prop is not None:
        event.update({"propertyName": prop, "propertyValue": value})
        del event["changeFlag"]
    return event


def hubspot_headers(secret: str, url: str, body: bytes, timestamp_ms: int) -> dict[str, str]:
    return {"Content-Type": "application/json",
            "X-HubSpot-Signature-v3": signature_v3(secret, "POST", url, body, str(timestamp_ms)),
            "X-HubSpot-Request-Timestamp": str(timestamp_ms),
            "X-HubSpot-Signature-Version": "v3"}


# --- Salesforce -----------------------------------------------------------------------------------
# Shape: https://developer.salesforce.com/docs/platform/api/guide/sforce-api-om-outboundmessaging-wsdl.html
# (soapenv:Envelope / Body / notifications with OrganizationId, ActionId, SessionId,
# EnterpriseUrl, PartnerUrl and up to 100 Notification elements of Id + sObject, whose fields
# live in urn:sobject.enterprise.soap.sforce.com and whose xsi:type names the object).

SF_ORG = "00D5e000000KQ2eEAG"


def salesforce_message(*sobjects: str, org: str = SF_ORG) -> bytes:
    notes = "".join(
        f"<Notification><Id>04l5e00000Gx7Q{i:04d}</Id>{s}</Notification>"
        for i, s in enumerate(sobjects))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f'<OrganizationId>{org}</OrganizationId><ActionId>04k5e000000CaRkAAK</ActionId>'
        '<SessionId xsi:nil="true"/>'
        '<EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/61.0/00D5e</EnterpriseUrl>'
        '<PartnerUrl>https://example.my.salesforce.com/services/Soap/u/61.0/00D5e</PartnerUrl>'
        f'{notes}</notifications></soapenv:Body></soapenv:Envelope>').encode()


def sf_object(kind: str, **fields: str) -> str:
    body = "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in fields.items())
    return (f'<sObject xsi:type="sf:{kind}" '
            f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{body}</sObject>')


def sf_opportunity(record_id: str = "0065e00000AbCdEAAV", *, stage: str = "Prospecting",
                   amount: str = "5000.0", created: str = "2026-03-02T09:00:00.000Z",
                   modified: str = "2026-03-02T09:00:00.000Z", closed: bool = False,
                   won: bool = False, owner: str = "0055e000001AbCdEAK") -> str:
    return sf_object("Opportunity", Id=record_id, AccountId="0015e00000ZkM3hAAF",
                     Amount=amount, CloseDate="2026-04-30", CreatedDate=created,
                     IsClosed=str(closed).lower(), IsWon=str(won).lower(),
                     LastModifiedDate=modified, OwnerId=owner, StageName=stage)
