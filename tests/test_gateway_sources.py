"""The CRM mappers: documented payloads in, exactly the expected contract events out.

No server and no broker: each test maps a delivery as the gateway would and looks at what it
would produce (events that the engine's decoder accepted) and dead-letter (with a reason).
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.delivery import Unauthorized, Unreadable
from gateway.server import Gateway
from gateway_fixtures import (
    hubspot_event,
    pipedrive_activity,
    pipedrive_deal,
    pipedrive_delivery,
    pipedrive_lead,
    salesforce_message,
    sf_object,
    sf_opportunity,
)
from gateway_helpers import Mapped, gateway_config, source

@pytest.fixture
def gateway(tmp_path):
    return Gateway(gateway_config(tmp_path))


def mapped(gateway, name, body) -> Mapped:
    return Mapped(gateway, source(gateway, name), body)


# --- Pipedrive ------------------------------------------------------------------------------------

def test_pipedrive_deal_created_is_one_complete_deal_created(gateway):
    result = mapped(gateway, "pipedrive", pipedrive_delivery("create", pipedrive_deal(1)))
    assert result.dead == []
    [event] = result.events
    assert event == {
        "event_id": event["event_id"], "type": "deal.created",
        "occurred_at": "2026-03-02T09:00:00.000Z", "deal_id": "pipedrive-deal-1",
        "team_id": "emea", "rep_id": "rep-017", "amount": 1200.0, "currency": "EUR",
        "customer_id": "pipedrive-org-2", "stage": "discovery",
        "expected_close_at": "2026-04-30T00:00:00+02:00",  # local midnight, Europe/Berlin
    }


def test_pipedrive_redelivery_gives_the_same_event_ids(gateway):
    first = mapped(gateway, "pipedrive", pipedrive_delivery("create", pipedrive_deal(1)))
    retry = mapped(gateway, "pipedrive", pipedrive_delivery("create", pipedrive_deal(1),
                                                            attempt=2))
    assert [e["event_id"] for e in first.events] == [e["event_id"] for e in retry.events]
    other = mapped(gateway, "pipedrive", pipedrive_delivery("create", pipedrive_deal(2)))
    assert other.events[0]["event_id"] != first.events[0]["event_id"]


def test_pipedrive_won_is_a_close_at_won_time_with_value_and_customer(gateway):
    deal = pipedrive_deal(1, status="won", won_time="2026-03-05T15:00:00Z",
                          update_time="2026-03-05T15:00:00Z")
    result = mapped(gateway, "pipedrive", pipedrive_delivery("change", deal, {"status": "open"}))
    [close] = result.events
    assert close["type"] == "deal.closed" and close["outcome"] == "won"
    assert close["occurred_at"] == "2026-03-05T15:00:00.000Z"
    assert (close["amount"], close["customer_id"], close["rep_id"]) == (
        1200.0, "pipedrive-org-2", "rep-017")
    assert close["opened_at"] == "2026-03-02T09:00:00.000Z"


def test_pipedrive_lost_is_a_lost_close(gateway):
    deal = pipedrive_deal(1, status="lost", lost_time="2026-03-06T10:00:00Z")
    [close] = mapped(gateway, "pipedrive",
                     pipedrive_delivery("change", deal, {"status": "open"})).events
    assert (close["outcome"], close["occurred_at"]) == ("lost", "2026-03-06T10:00:00.000Z")


def test_pipedrive_stage_and_value_change_is_one_deal_updated(gateway):
    deal = pipedrive_deal(1, stage_id=2, value=1500.0, update_time="2026-03-03T10:00:00Z")
    result = mapped(gateway, "pipedrive",
                    pipedrive_delivery("change", deal, {"stage_id": 1, "value": 1200.0}))
    assert result.dead == []
    [event] = result.events
    assert event["type"] == "deal.updated"
    assert (event["stage"], event["amount"], event["occurred_at"]) == (
        "proposal", 1500.0, "2026-03-03T10:00:00.000Z")
    assert "rep_id" not in event and "expected_close_at" not in event


def test_pipedrive_title_change_is_ignored_not_dead_lettered(gateway):
    deal = pipedrive_deal(1, title="Renamed")
    result = mapped(gateway, "pipedrive", pipedrive_delivery("change", deal, {"title": "Old"}))
    assert (result.events, result.dead, result.delivery.ignored) == ([], [], 1)


def test_pipedrive_unknown_user_is_dead_lettered_with_the_delivery(gateway):
    body = pipedrive_delivery("create", pipedrive_deal(1, owner=999))
    result = mapped(gateway, "pipedrive", body)
    assert result.events == []
    [(reason, detail, original)] = result.dead
    assert reason == "unknown_user" and "999" in detail and original == body


def test_pipedrive_unknown_user_goes_to_the_default_team_when_configured(tmp_path):
    gateway = Gateway(gateway_config(tmp_path, unknown_user="default_team",
                                     default_team="unassigned"))
    [event] = mapped(gateway, "pipedrive",
                     pipedrive_delivery("create", pipedrive_deal(1, owner=999))).events
    assert (event["team_id"], event["rep_id"]) == ("unassigned", "pipedrive-999")


def test_pipedrive_unmapped_stage_is_dead_lettered(gateway):
    result = mapped(gateway, "pipedrive", pipedrive_delivery("create", pipedrive_deal(1, stage_id=9)))
    assert result.events == [] and result.dead[0][0] == "unmapped_stage"


def test_pipedrive_other_currency_is_dead_lettered_by_the_decoder(gateway):
    result = mapped(gateway, "pipedrive",
                    pipedrive_delivery("create", pipedrive_deal(1, currency="USD")))
    assert result.events == []
    assert result.dead[0][0] == "invalid_event" and "currency_mismatch" in result.dead[0][1]


def test_pipedrive_unused_object_is_dead_lettered(gateway):
    body = pipedrive_delivery("create", {"id": 3, "name": "Person"}, entity="person")
    result = mapped(gateway, "pipedrive", body)
    assert result.dead[0][0] == "unsupported_object"


def test_pipedrive_activity_marked_done_is_logged_once(gateway):
    done = mapped(gateway, "pipedrive", pipedrive_delivery(
        "change", pipedrive_activity(7), {"done": False}, entity="activity"))
    [event] = done.events
    assert event == {"event_id": event["event_id"], "type": "activity.logged",
                     "occurred_at": "2026-03-02T11:00:00.000Z", "activity_type": "call",
                     "deal_id": "pipedrive-deal-1", "duration_seconds": 1800,
                     "team_id": "emea", "rep_id": "rep-017"}
    edited = mapped(gateway, "pipedrive", pipedrive_delivery(
        "change", pipedrive_activity(7), {"subject": "old"}, entity="activity"))
    assert edited.events == []  # already done: an edit is no second activity


def test_pipedrive_lead_created(gateway):
    [event] = mapped(gateway, "pipedrive",
                     pipedrive_delivery("create", pipedrive_lead(), entity="lead")).events
    assert event["type"] == "lead.created" and event["source"] == "Web forms"
    assert event["lead_id"] == "pipedrive-lead-adf21080-0e10-11eb-879b-05d71fb426ec"


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"data": {}}', b""])
def test_pipedrive_unreadable_body(gateway, body):
    with pytest.raises(Unreadable):
        asyncio.run(source(gateway, "pipedrive").map(body))


# --- HubSpot --------------------------------------------------------------------------------------

T0 = 1_772_442_000_000  # 2026-03-02T09:00:00Z in ms


def hs(*events) -> bytes:
    return orjson.dumps(list(events))


def test_hubspot_deal_created_waits_for_the_owner_then_is_complete(gateway):
    first = mapped(gateway, "hubspot", hs(hubspot_event("deal.creation", 501, T0)))
    assert first.events == [] and first.dead == []  # no owner yet: waits in state
    assert len(first.state) == 1
    second = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 501, T0 + 1000, "amount", "2500"),
        hubspot_event("deal.propertyChange", 501, T0 + 1000, "hubspot_owner_id", "41629779")))
    [created] = [e for e in second.events if e["type"] == "deal.created"]
    assert created["occurred_at"] == "2026-03-02T09:00:00.000Z"  # the creation time
    assert (created["rep_id"], created["team_id"], created["amount"]) == (
        "rep-017", "emea", 2500.0)


def test_hubspot_won_close_takes_the_amount_saved_with_it(gateway):
    mapped(gateway, "hubspot", hs(
        hubspot_event("deal.creation", 502, T0),
        hubspot_event("deal.propertyChange", 502, T0, "hubspot_owner_id", "41629780")))
    # One save: HubSpot sends the stage before the amount here; the close must see the amount.
    result = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 502, T0 + 5000, "dealstage", "closedwon"),
        hubspot_event("deal.propertyChange", 502, T0 + 5000, "amount", "9000")))
    [close] = [e for e in result.events if e["type"] == "deal.closed"]
    assert (close["outcome"], close["amount"], close["rep_id"]) == ("won", 9000.0, "rep-018")
    assert close["opened_at"] == "2026-03-02T09:00:00.000Z"


def test_hubspot_redelivered_batch_gives_no_new_event_ids(gateway):
    body = hs(hubspot_event("deal.creation", 503, T0),
              hubspot_event("deal.propertyChange", 503, T0, "hubspot_owner_id", "41629779"))
    src = source(gateway, "hubspot")
    # Kafka refused the first attempt (503): nothing was committed, the retry emits the same.
    refused = asyncio.run(src.map(body))
    first = mapped(gateway, "hubspot", body)
    assert [i.event["event_id"] for i in refused.items] == [e["event_id"] for e in first.events]
    assert first.events
    # A retry after the accepted attempt adds no event id.
    retry = mapped(gateway, "hubspot", body)
    assert {e["event_id"] for e in retry.events} <= {e["event_id"] for e in first.events}


def test_hubspot_lost_stage_and_unknown_owner(gateway):
    result = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.creation", 504, T0),
        hubspot_event("deal.propertyChange", 504, T0, "hubspot_owner_id", "77")))
    assert result.events == [] and result.dead[0][0] == "unknown_user"


def test_hubspot_unmapped_stage_is_dead_lettered(gateway):
    result = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 505, T0, "dealstage", "custom123")))
    assert result.dead[0][0] == "unmapped_stage"


def test_hubspot_changes_out_of_order_keep_the_latest_value(gateway):
    newer = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 506, T0 + 9000, "dealstage", "presentationscheduled")))
    older = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 506, T0 + 1000, "dealstage", "appointmentscheduled")))
    # Both are emitted at their own times (the engine orders them) ...
    assert [(e["stage"], e["occurred_at"]) for e in newer.events + older.events] == [
        ("proposal", "2026-03-02T09:00:09.000Z"), ("discovery", "2026-03-02T09:00:01.000Z")]
    # ... and the assembled object keeps the newer one for the creation still to come.
    result = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.creation", 506, T0),
        hubspot_event("deal.propertyChange", 506, T0, "hubspot_owner_id", "41629779")))
    [created] = [e for e in result.events if e["type"] == "deal.created"]
    assert created["stage"] == "proposal"


def test_hubspot_contact_created_and_qualified_once_owner_known(gateway):
    created = mapped(gateway, "hubspot", hs(hubspot_event("contact.creation", 900, T0)))
    [lead] = created.events
    assert lead["type"] == "lead.created" and "rep_id" not in lead
    waiting = mapped(gateway, "hubspot", hs(hubspot_event(
        "contact.propertyChange", 900, T0 + 60_000, "lifecyclestage", "salesqualifiedlead")))
    assert waiting.events == []
    owner = mapped(gateway, "hubspot", hs(hubspot_event(
        "contact.propertyChange", 900, T0 + 120_000, "hubspot_owner_id", "41629779")))
    [qualified] = owner.events
    assert qualified["type"] == "lead.qualified"
    assert qualified["occurred_at"] == "2026-03-02T09:01:00.000Z"  # the lifecycle change's time
    assert qualified["rep_id"] == "rep-017"


def test_hubspot_unused_object_type_is_dead_lettered(gateway):
    result = mapped(gateway, "hubspot", hs(hubspot_event("company.creation", 1, T0)))
    assert result.dead[0][0] == "unsupported_object"


def test_hubspot_state_survives_in_the_records_it_writes(tmp_path):
    """A second gateway that reads the first one's state records continues the object."""
    first = Gateway(gateway_config(tmp_path))
    written = mapped(first, "hubspot", hs(hubspot_event("deal.creation", 507, T0)))
    second = Gateway(gateway_config(tmp_path))
    for record in written.state:
        second.states._apply(record.key, record.value)
    result = mapped(second, "hubspot", hs(
        hubspot_event("deal.propertyChange", 507, T0 + 10, "hubspot_owner_id", "41629779")))
    assert [e["type"] for e in result.events] == ["deal.created"]


# --- Salesforce -----------------------------------------------------------------------------------

def test_salesforce_opportunity_created(gateway):
    result = mapped(gateway, "salesforce", salesforce_message(sf_opportunity()))
    [event] = result.events
    assert event == {"event_id": event["event_id"], "type": "deal.created",
                     "occurred_at": "2026-03-02T09:00:00.000Z",
                     "deal_id": "salesforce-opp-0065e00000AbCdEAAV",
                     "customer_id": "salesforce-acct-0015e00000ZkM3hAAF", "amount": 5000.0,
                     "stage": "discovery", "expected_close_at": "2026-04-30T00:00:00+02:00",
                     "team_id": "emea", "rep_id": "rep-017"}


def test_salesforce_closed_won(gateway):
    body = salesforce_message(sf_opportunity(stage="Closed Won", closed=True, won=True,
                                             modified="2026-03-09T12:00:00.000Z"))
    [close] = mapped(gateway, "salesforce", body).events
    assert (close["type"], close["outcome"], close["amount"]) == ("deal.closed", "won", 5000.0)
    assert close["occurred_at"] == "2026-03-09T12:00:00.000Z"


def test_salesforce_update_is_a_deal_updated(gateway):
    body = salesforce_message(sf_opportunity(stage="Proposal/Price Quote",
                                             modified="2026-03-04T12:00:00.000Z"))
    [event] = mapped(gateway, "salesforce", body).events
    assert (event["type"], event["stage"]) == ("deal.updated", "proposal")


def test_salesforce_lead_task_and_unsupported_in_one_message(gateway):
    lead = sf_object("Lead", Id="00Q5e00000AbCdEAAV", OwnerId="0055e000001AbCdEAK",
                     Status="Qualified", CreatedDate="2026-03-02T09:00:00.000Z",
                     LastModifiedDate="2026-03-02T09:00:00.000Z", LeadSource="Web")
    task = sf_object("Task", Id="00T5e00000AbCdEAAV", OwnerId="0055e000001AbCdEAK",
                     Status="Completed", IsClosed="true", TaskSubtype="Call",
                     WhatId="0065e00000AbCdEAAV", CompletedDateTime="2026-03-02T10:00:00.000Z",
                     LastModifiedDate="2026-03-02T10:00:00.000Z")
    account = sf_object("Account", Id="0015e00000ZkM3hAAF", Name="Acme")
    result = mapped(gateway, "salesforce", salesforce_message(lead, task, account))
    assert result.types == ["lead.created", "lead.qualified", "activity.logged"]
    assert result.events[2]["deal_id"] == "salesforce-opp-0065e00000AbCdEAAV"
    assert result.dead[0][0] == "unsupported_object" and b"Account" in result.dead[0][2]


def test_salesforce_wrong_org_is_unauthorized(gateway):
    with pytest.raises(Unauthorized):
        asyncio.run(source(gateway, "salesforce").map(
            salesforce_message(sf_opportunity(), org="00D000000000001AAA")))


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<x>&lol3;</x></soapenv:Body></soapenv:Envelope>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<x>&e;</x>"""


@pytest.mark.parametrize("body", [BOMB, EXTERNAL, b"<unclosed", b"", b"<a/>"])
def test_salesforce_entity_bombs_and_bad_xml_are_unreadable(gateway, body):
    with pytest.raises(Unreadable):
        asyncio.run(source(gateway, "salesforce").map(body))


# --- contract -------------------------------------------------------------------------------------

VALID = (b'{"event_id":"e1","type":"lead.created","occurred_at":"2026-03-02T09:00:00Z",'
         b'"lead_id":"l1"}')


def test_contract_lines_are_judged_one_by_one(gateway):
    body = VALID + b"\n\n" + b'{"event_id":"e2","type":"lead.created"}\r\n' + b"not json\n"
    m = mapped(gateway, "contract", body)
    assert m.events == [orjson.loads(VALID)]
    src = source(gateway, "contract")
    status, _, answer = src.answer(m.delivery, m.results)
    assert status == 200
    assert orjson.loads(answer) == {"accepted": 1, "invalid": 2, "results": [
        {"line": 1, "status": "accepted", "event_id": "e1"},
        {"line": 3, "status": "invalid", "reason": "missing_field",
         "detail": m.results[1].detail},
        {"line": 4, "status": "invalid", "reason": "malformed_json",
         "detail": m.results[2].detail}]}
    assert [d[0] for d in m.dead] == ["missing_field", "malformed_json"]


def test_contract_json_array(gateway):
    m = mapped(gateway, "contract", b"[" + VALID + b", 5]")
    assert m.events == [orjson.loads(VALID)] and m.dead[0][0] == "not_an_object"
    with pytest.raises(Unreadable):
        asyncio.run(source(gateway, "contract").map(b"[" + VALID))


# HubSpot workflow "Send a webhook": the object as the object API returns it
# (https://developers.hubspot.com/docs/methods/workflows/webhook_information); legacy deals API
# form: dealId, portalId, properties of {value, timestamp, source}.

def legacy_deal(deal_id, stage, amount, owner, modified):
    def prop(value, at=modified):
        return {"value": value, "timestamp": at, "source": "CRM_UI", "sourceId": None}
    return orjson.dumps({"portalId": 62515, "dealId": deal_id, "isDeleted": False,
                         "properties": {"dealname": prop("Big deal"), "dealstage": prop(stage),
                                        "amount": prop(amount),
                                        "hubspot_owner_id": prop(owner, T0),
                                        "createdate": prop(str(T0), T0),
                                        "hs_lastmodifieddate": prop(str(modified))},
                         "imports": [], "stateChanges": []})


def test_hubspot_workflow_delivery_of_a_whole_deal(gateway):
    first = mapped(gateway, "hubspot",
                   legacy_deal(600, "appointmentscheduled", "4000", "41629779", T0 + 1000))
    assert first.dead == []
    # Each property at its own timestamp: the owner (and the creation) at T0, the rest later.
    assert [(e["type"], e["occurred_at"], e.get("amount"), e.get("stage"), e.get("rep_id"))
            for e in first.events] == [
        ("deal.created", "2026-03-02T09:00:00.000Z", None, None, "rep-017"),
        ("deal.updated", "2026-03-02T09:00:01.000Z", 4000.0, None, None),
        ("deal.updated", "2026-03-02T09:00:01.000Z", None, "discovery", None)]
    again = mapped(gateway, "hubspot",
                   legacy_deal(600, "appointmentscheduled", "4000", "41629779", T0 + 1000))
    assert again.events == []  # the same object state again: nothing new
    won = mapped(gateway, "hubspot", legacy_deal(600, "closedwon", "4500", "41629779", T0 + 9000))
    [close] = [e for e in won.events if e["type"] == "deal.closed"]
    assert (close["outcome"], close["amount"], close["occurred_at"]) == (
        "won", 4500.0, "2026-03-02T09:00:09.000Z")


def test_hubspot_workflow_delivery_in_the_v3_object_form(gateway):
    body = orjson.dumps({"id": "601", "properties": {
        "dealstage": "presentationscheduled", "amount": "1000", "hubspot_owner_id": "41629780",
        "createdate": "2026-03-02T09:00:00.000Z"},
        "createdAt": "2026-03-02T09:00:00.000Z", "updatedAt": "2026-03-03T09:00:00.000Z"})
    result = mapped(gateway, "hubspot", body)
    [created] = [e for e in result.events if e["type"] == "deal.created"]
    assert (created["deal_id"], created["rep_id"]) == ("hubspot-deal-601", "rep-018")
    assert {e["stage"] for e in result.events if e.get("stage")} == {"proposal"}



def test_edits_of_a_closed_deal_do_not_reopen_it(gateway):
    """A deal.updated after a close re-opens the deal (SPEC §7.3): edits of won deals emit none."""
    won = pipedrive_deal(1, status="won", value=2000.0, won_time="2026-03-05T15:00:00Z",
                         update_time="2026-03-07T10:00:00Z")
    edit = mapped(gateway, "pipedrive", pipedrive_delivery("change", won, {"title": "x"}))
    assert edit.events == [] and edit.dead == []
    mapped(gateway, "hubspot", hs(
        hubspot_event("deal.creation", 520, T0),
        hubspot_event("deal.propertyChange", 520, T0, "hubspot_owner_id", "41629779"),
        hubspot_event("deal.propertyChange", 520, T0 + 10, "dealstage", "closedwon")))
    later = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 520, T0 + 99, "closedate", str(T0)),
        hubspot_event("deal.propertyChange", 520, T0 + 99, "hs_priority", "high")))
    assert later.events == []
    reopened = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 520, T0 + 500, "dealstage", "appointmentscheduled")))
    assert [(e["type"], e["stage"]) for e in reopened.events] == [("deal.updated", "discovery")]


def test_hubspot_one_save_gives_a_complete_deal_created(gateway):
    result = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 530, T0, "hubspot_owner_id", "41629779"),
        hubspot_event("deal.propertyChange", 530, T0, "dealstage", "appointmentscheduled"),
        hubspot_event("deal.propertyChange", 530, T0, "closedate", str(T0 + 86_400_000)),
        hubspot_event("deal.creation", 530, T0),
        hubspot_event("deal.propertyChange", 530, T0, "amount", "800")))
    [created] = [e for e in result.events if e["type"] == "deal.created"]
    assert (created["stage"], created["amount"], created["expected_close_at"]) == (
        "discovery", 800.0, "2026-03-03T09:00:00.000Z")



def test_objects_waiting_for_an_owner_are_counted(gateway):
    mapped(gateway, "hubspot", hs(hubspot_event("deal.creation", 540, T0),
                                  hubspot_event("deal.creation", 541, T0),
                                  hubspot_event("contact.creation", 542, T0)))
    assert gateway.states.waiting() == {"hubspot": 2}
    mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 540, T0, "hubspot_owner_id", "41629779")))
    assert gateway.states.waiting() == {"hubspot": 1}



def test_a_corrected_won_amount_corrects_the_close_in_its_window(gateway):
    """Pipedrive: the won deal's value edited two days later; the close keeps its time."""
    won = pipedrive_deal(1, status="won", value=1200.0, won_time="2026-03-05T15:00:00Z",
                         update_time="2026-03-05T15:00:00Z")
    [close] = mapped(gateway, "pipedrive",
                     pipedrive_delivery("change", won, {"status": "open"})).events
    edited = pipedrive_deal(1, status="won", value=2000.0, won_time="2026-03-05T15:00:00Z",
                            update_time="2026-03-07T10:00:00Z")
    [correction] = mapped(gateway, "pipedrive",
                          pipedrive_delivery("change", edited, {"value": 1200.0})).events
    assert (correction["type"], correction["amount"], correction["occurred_at"]) == (
        "deal.closed", 2000.0, close["occurred_at"])
    # Same instant: the engine keeps the greater event id (SPEC §3), the later version.
    assert correction["event_id"] > close["event_id"]
    again = mapped(gateway, "pipedrive", pipedrive_delivery("change", edited, {"value": 1200.0}))
    assert again.events == [correction]  # a redelivery is a duplicate



def test_hubspot_corrected_amount_and_owner_correct_the_close(gateway):
    mapped(gateway, "hubspot", hs(
        hubspot_event("deal.creation", 521, T0),
        hubspot_event("deal.propertyChange", 521, T0, "amount", "1000"),
        hubspot_event("deal.propertyChange", 521, T0, "hubspot_owner_id", "41629779")))
    [close] = mapped(gateway, "hubspot", hs(hubspot_event(
        "deal.propertyChange", 521, T0 + 10_000, "dealstage", "closedwon"))).events
    fixed = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 521, T0 + 90_000, "amount", "1500"))).events
    moved = mapped(gateway, "hubspot", hs(
        hubspot_event("deal.propertyChange", 521, T0 + 95_000, "hubspot_owner_id",
                      "41629780"))).events
    summary = [(e["type"], e["occurred_at"], e["amount"], e["rep_id"])
               for e in (close, *fixed, *moved)]
    assert summary == [("deal.closed", "2026-03-02T09:00:10.000Z", 1000.0, "rep-017"),
                       ("deal.closed", "2026-03-02T09:00:10.000Z", 1500.0, "rep-017"),
                       ("deal.closed", "2026-03-02T09:00:10.000Z", 1500.0, "rep-018")]
    ids = [close["event_id"], fixed[0]["event_id"], moved[0]["event_id"]]
    assert ids == sorted(ids) and len(set(ids)) == 3  # the latest version wins the tie


def test_salesforce_edit_of_a_closed_opportunity_corrects_its_close(gateway):
    won = sf_opportunity(stage="Closed Won", closed=True, won=True, amount="5000.0",
                         modified="2026-03-09T12:00:00.000Z")
    [close] = mapped(gateway, "salesforce", salesforce_message(won)).events
    edited = sf_opportunity(stage="Closed Won", closed=True, won=True, amount="6500.0",
                            modified="2026-04-02T08:00:00.000Z")
    [fix] = mapped(gateway, "salesforce", salesforce_message(edited)).events
    assert (fix["occurred_at"], fix["amount"]) == ("2026-03-09T12:00:00.000Z", 6500.0)
    assert fix["event_id"] > close["event_id"]  # the latest version wins the tie
    again = mapped(gateway, "salesforce", salesforce_message(won)).events
    assert again == [close]  # a late redelivery of the first message is a duplicate
    reopened = mapped(gateway, "salesforce", salesforce_message(sf_opportunity(
        stage="Prospecting", amount="6500.0", modified="2026-04-03T08:00:00.000Z"))).events
    assert [e["type"] for e in reopened] == ["deal.updated"]
    lost = mapped(gateway, "salesforce", salesforce_message(sf_opportunity(
        stage="Closed Lost", closed=True, modified="2026-04-20T08:00:00.000Z"))).events
    assert [(e["outcome"], e["occurred_at"]) for e in lost] == [
        ("lost", "2026-04-20T08:00:00.000Z")]



def test_hubspot_a_late_older_stage_does_not_forget_the_close(gateway):
    mapped(gateway, "hubspot", hs(
        hubspot_event("deal.creation", 522, T0),
        hubspot_event("deal.propertyChange", 522, T0, "amount", "700"),
        hubspot_event("deal.propertyChange", 522, T0, "hubspot_owner_id", "41629779"),
        hubspot_event("deal.propertyChange", 522, T0 + 50_000, "dealstage", "closedwon")))
    late = mapped(gateway, "hubspot", hs(hubspot_event(
        "deal.propertyChange", 522, T0 + 20_000, "dealstage", "appointmentscheduled"))).events
    assert [(e["type"], e["occurred_at"]) for e in late] == [
        ("deal.updated", "2026-03-02T09:00:20.000Z")]  # before the close: no re-open
    [fix] = mapped(gateway, "hubspot", hs(hubspot_event(
        "deal.propertyChange", 522, T0 + 90_000, "amount", "900"))).events
    assert (fix["type"], fix["occurred_at"], fix["amount"]) == (
        "deal.closed", "2026-03-02T09:00:50.000Z", 900.0)
