"""The published JSON Schemas and the engine's decoder accept and reject exactly the same events.

Why: ``schemas/`` is the contract CRM integrators code against and ``engine/decode.py`` is what
the engine enforces; if they drift, producers get told "valid" for events the engine
dead-letters. The agreement runs over the bad-input corpus, the spec example, systematic
one-field variants of valid events and generated events.

Three checks of the decoder are outside any schema and are handled here explicitly: the size
limit (samples stay under it; corpus lines over it are left out), the configured currency,
which the test fills into the schema's ``$defs/currency`` as a ``const``, and the configured
stage ids (SPEC §7.1), filled into ``$defs/stage`` as an ``enum``; the decoder is given the
same stages.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from engine.decode import TIMESTAMP_PATTERN, decode
from engine.event import ACTIVITY_TYPES, EVENT_TYPES, OUTCOMES, SPEND_CATEGORIES, Event

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
CORPUS = ROOT / "tests" / "data" / "bad_events.jsonl"
EXAMPLE = Path("/work/shared/spec/examples/small/events.jsonl")
CORPUS_CURRENCY, CORPUS_MAX_BYTES = "EUR", 4096  # the corpus's configuration
LIMIT = 1 << 20


def load_schemas() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(SCHEMAS.glob("*.schema.json"))}


STAGES = frozenset({"discovery", "proposal"})  # the configured stages of these checks


@cache
def validator(currency: str) -> Draft202012Validator:
    """The event schema with the reporting currency and the stage ids filled in where the
    engine checks them."""
    schemas = copy.deepcopy(load_schemas())
    schemas["envelope.schema.json"]["$defs"]["currency"] = {
        "anyOf": [{"const": currency}, {"type": "null"}]}
    schemas["envelope.schema.json"]["$defs"]["stage"] = {
        "anyOf": [{"enum": sorted(STAGES)}, {"type": "null"}]}
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
    return Draft202012Validator(schemas["event.schema.json"], registry=registry)


def schema_accepts(raw: bytes, currency: str) -> bool:
    try:
        document = orjson.loads(raw)  # the same JSON reading as the engine: no NaN, no BOM
    except orjson.JSONDecodeError:
        return False
    return validator(currency).is_valid(document)


def assert_agree(raw: bytes, currency: str = CORPUS_CURRENCY) -> None:
    result = decode(raw, currency=currency, max_event_bytes=LIMIT, stages=STAGES)
    by_schema = schema_accepts(raw, currency)
    assert isinstance(result, Event) == by_schema, (
        f"decoder says {result!r}, schema says {'valid' if by_schema else 'invalid'} "
        f"for {raw[:300]!r}")


# --- the schemas themselves ---------------------------------------------------------------------

def test_there_is_an_envelope_an_event_and_one_schema_per_type():
    names = set(load_schemas())
    assert names == {"envelope.schema.json", "event.schema.json",
                     *(f"{t}.schema.json" for t in EVENT_TYPES)}


@pytest.mark.parametrize("name", sorted(load_schemas()))
def test_schemas_are_valid_draft_2020_12_schemas_with_matching_ids(name):
    schema = load_schemas()[name]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith("/" + name)
    assert schema.get("description")


def test_shared_rules_match_the_engine():
    schemas = load_schemas()
    defs = schemas["envelope.schema.json"]["$defs"]
    assert defs["timestamp"]["pattern"] == "^" + TIMESTAMP_PATTERN + "$"
    assert defs["identifier"]["maxLength"] == 128
    assert tuple(schemas["envelope.schema.json"]["properties"]["type"]["enum"]) == EVENT_TYPES
    assert tuple(schemas["activity.logged.schema.json"]["properties"]["activity_type"]["enum"]) \
        == ACTIVITY_TYPES
    assert tuple(schemas["deal.closed.schema.json"]["properties"]["outcome"]["enum"]) == OUTCOMES
    assert tuple(schemas["spend.recorded.schema.json"]["properties"]["category"]["enum"]) \
        == SPEND_CATEGORIES


def test_every_documented_field_has_a_description():
    for name, schema in load_schemas().items():
        for field, rule in schema.get("properties", {}).items():
            if field in ("type", "currency") and name != "envelope.schema.json":
                continue  # the const selector and the shared $defs/currency
            assert rule.get("description"), f"{name}: {field}"


# --- agreement ------------------------------------------------------------------------------------

def corpus_lines() -> list[bytes]:
    lines = []
    for raw in CORPUS.read_bytes().split(b"\n"):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if raw.strip() and len(raw) <= CORPUS_MAX_BYTES:  # size is not a schema matter
            lines.append(raw)
    return lines


@pytest.mark.parametrize("raw", corpus_lines(), ids=lambda raw: raw[:40].decode(errors="replace"))
def test_schemas_and_decoder_agree_on_the_bad_events_corpus(raw):
    assert_agree(raw)


def test_schemas_and_decoder_agree_on_the_spec_example():
    if not EXAMPLE.exists():
        pytest.skip("spec examples not available")
    for raw in EXAMPLE.read_bytes().splitlines():
        assert_agree(raw, currency="GBP")


T = "2026-03-29T01:30:00+01:00"
FULL: dict[str, dict] = {
    "lead.created": {"lead_id": "L1", "team_id": "emea", "rep_id": "r1", "source": "web"},
    "lead.qualified": {"lead_id": "L1", "team_id": "emea", "rep_id": "r1"},
    "activity.logged": {"team_id": "emea", "rep_id": "r1", "activity_type": "demo",
                        "lead_id": "L1", "deal_id": "D1", "duration_seconds": 600},
    "deal.created": {"deal_id": "D1", "team_id": "emea", "rep_id": "r1", "amount": 100,
                     "lead_id": "L1", "customer_id": "C1", "currency": "EUR",
                     "stage": "discovery", "expected_close_at": "2026-06-01T00:00:00+02:00"},
    "deal.updated": {"deal_id": "D1", "stage": "proposal", "amount": 120.5,
                     "expected_close_at": "2026-06-30T00:00:00+02:00", "team_id": "emea",
                     "rep_id": "r2", "currency": "EUR"},
    "deal.closed": {"deal_id": "D1", "team_id": "emea", "rep_id": "r1", "outcome": "won",
                    "amount": 100.5, "customer_id": "C1", "opened_at": T, "currency": "EUR"},
    "subscription.started": {"subscription_id": "S1", "customer_id": "C1", "mrr": 49,
                             "currency": "EUR"},
    "subscription.cancelled": {"subscription_id": "S1", "customer_id": "C1"},
    "spend.recorded": {"amount": 10, "category": "sales", "team_id": "emea", "currency": "EUR"},
}
BASES = [{"event_id": "e-1", "type": t, "occurred_at": T, "schema_version": 1, **fields}
         for t, fields in FULL.items()]
BASES.append({**BASES[list(FULL).index("deal.closed")], "outcome": "lost"})
MISSING = object()
PALETTE = [
    MISSING, None, True, False, 0, 1, 1.0, -1, 0.5, -0.0, 1e300, 2**64 - 1, "", "x", "x" * 128,
    "x" * 129, "é" * 128, "a\u0000b", "a\u007fb", "a\nb", "a\u0085b", "EUR", "eur", "USD",
    "won", "lost", "call", "sales", "lead.created", "deal.closed", "spend.recorded",
    "discovery", "proposal", "Discovery", "deal.updated",
    "2026-03-29T01:30:00Z", "2026-03-29t01:30:00z", "2026-03-29 01:30:00.123456789-05:30",
    "2026-03-29T01:30:00", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z",
    "2026-03-29T01:30:00Z\n", "2026-03-29T01:30:00+0100", "0000-01-01T00:00:00Z",
    [], {}, ["x"], {"a": 1},
]


def one_field_variants():
    for base in BASES:
        for field in sorted({*base, "currency"}):
            for value in PALETTE:
                variant = dict(base)
                if value is MISSING:
                    variant.pop(field, None)
                else:
                    variant[field] = value
                yield orjson.dumps(variant)


def test_schemas_and_decoder_agree_on_every_one_field_variant_of_valid_events():
    disagreements = []
    count = 0
    for raw in one_field_variants():
        count += 1
        result = decode(raw, currency="EUR", max_event_bytes=LIMIT, stages=STAGES)
        if isinstance(result, Event) != schema_accepts(raw, "EUR"):
            disagreements.append((raw, result))
    assert not disagreements, disagreements[:5]
    assert count > 3500


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from([v for v in PALETTE if v is not MISSING and isinstance(v, str)]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(BASES), st.dictionaries(
    st.sampled_from(sorted({f for base in BASES for f in base} | {"currency", "Amount"})),
    values, max_size=4), st.sets(st.sampled_from(sorted({f for b in BASES for f in b})),
                                 max_size=3))
def test_schemas_and_decoder_agree_on_generated_events(base, changes, removed):
    variant = {k: v for k, v in {**base, **changes}.items() if k not in removed}
    assert_agree(orjson.dumps(variant), currency="EUR")
