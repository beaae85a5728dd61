"""Whatever a CRM (or an attacker) posts, a mapper answers: events, dead letters, or a 400.

Hypothesis replaces fields of documented payloads with arbitrary JSON values; the mapper must
never raise anything but :class:`Unreadable` (400) or :class:`Unauthorized` (401), and every
event it lets through must have passed the engine's decoder.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import config_from_mapping
from engine.decode import decode
from gateway.delivery import Unauthorized, Unreadable
from gateway.server import Gateway
from gateway_fixtures import (
    hubspot_event,
    pipedrive_activity,
    pipedrive_deal,
    pipedrive_delivery,
    salesforce_message,
    sf_opportunity,
)
from gateway_helpers import Mapped, gateway_raw, source

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                       children, max_size=3),
    max_leaves=6)

_GATEWAY: list[Gateway] = []


def gateway(tmp_path_factory) -> Gateway:
    if not _GATEWAY:
        _GATEWAY.append(Gateway(config_from_mapping(gateway_raw(tmp_path_factory.mktemp("g")))))
    return _GATEWAY[0]


def check(gw: Gateway, name: str, body: bytes) -> None:
    try:
        result = Mapped(gw, source(gw, name), body)
    except (Unreadable, Unauthorized):
        return
    for event in result.events:
        assert not hasattr(decode(orjson.dumps(event), currency="EUR",
                                  max_event_bytes=1 << 20, stages=gw.gate.stages), "reason")


SLOW = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@SLOW
@given(field=st.sampled_from(["id", "value", "currency", "status", "stage_id", "owner_id",
                              "add_time", "update_time", "won_time", "expected_close_date",
                              "org_id"]),
       value=JSON, action=st.sampled_from(["create", "change"]))
def test_pipedrive_deal_fields_of_any_value(tmp_path_factory, field, value, action):
    deal = pipedrive_deal(1, status="won", won_time="2026-03-05T15:00:00Z")
    deal[field] = value
    check(gateway(tmp_path_factory), "pipedrive",
          pipedrive_delivery(action, deal, {"status": "open", "stage_id": 1}))


@SLOW
@given(field=st.sampled_from(["id", "type", "done", "owner_id", "deal_id", "duration",
                              "marked_as_done_time"]), value=JSON)
def test_pipedrive_activity_fields_of_any_value(tmp_path_factory, field, value):
    activity = pipedrive_activity(7)
    activity[field] = value
    check(gateway(tmp_path_factory), "pipedrive",
          pipedrive_delivery("change", activity, {"done": False}, entity="activity"))


@SLOW
@given(field=st.sampled_from(["objectId", "occurredAt", "subscriptionType", "propertyName",
                              "propertyValue"]), value=JSON,
       prop=st.sampled_from(["dealstage", "amount", "closedate", "hubspot_owner_id"]))
def test_hubspot_event_fields_of_any_value(tmp_path_factory, field, value, prop):
    events = [hubspot_event("deal.creation", 900, 1_772_442_000_000),
              hubspot_event("deal.propertyChange", 900, 1_772_442_000_000, prop, "41629779")]
    events[1][field] = value
    check(gateway(tmp_path_factory), "hubspot", orjson.dumps(events))


@SLOW
@given(document=JSON)
def test_any_json_document(tmp_path_factory, document):
    body = orjson.dumps(document)
    for name in ("pipedrive", "hubspot", "contract"):
        check(gateway(tmp_path_factory), name, body)


@SLOW
@given(field=st.sampled_from(["Amount", "CloseDate", "CreatedDate", "LastModifiedDate",
                              "StageName", "IsClosed", "OwnerId"]),
       value=st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                            blacklist_characters="<&"), max_size=30))
def test_salesforce_fields_of_any_text(tmp_path_factory, field, value):
    opportunity = sf_opportunity(closed=True, won=True)
    start = opportunity.index(f"<sf:{field}>") + len(f"<sf:{field}>")
    end = opportunity.index(f"</sf:{field}>")
    body = salesforce_message(opportunity[:start] + value + opportunity[end:])
    check(gateway(tmp_path_factory), "salesforce", body)



@SLOW
@given(properties=st.dictionaries(
    st.sampled_from(["dealstage", "amount", "closedate", "hubspot_owner_id", "createdate",
                     "hs_lastmodifieddate", "lifecyclestage"]),
    JSON | st.fixed_dictionaries({"value": JSON, "timestamp": JSON}), max_size=7),
    identity=st.sampled_from(["dealId", "vid", "id"]), object_id=JSON)
def test_hubspot_workflow_objects_of_any_shape(tmp_path_factory, properties, identity, object_id):
    body = orjson.dumps({identity: object_id, "properties": properties,
                         "updatedAt": "2026-03-02T09:00:00Z"})
    check(gateway(tmp_path_factory), "hubspot", body)
