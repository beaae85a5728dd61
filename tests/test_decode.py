"""Decoding raw messages into events: every reason code and edge case of SPEC §1 and §6."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import config_from_mapping
from engine.decode import (
    TIMESTAMP_PATTERN,
    Decoder,
    _parse_timestamp_by_pattern,
    check_live_time,
    decode,
    parse_timestamp,
)
from engine.event import EVENT_TYPES, MICRO, Event, Rejection
from engine.jsonl import iter_lines

CURRENCY = "EUR"
LIMIT = 1_048_576
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
T0 = "2026-03-29T01:30:00+01:00"
T0_MICROS = (datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)

# A minimal valid event of every type (required fields only).
MINIMAL: dict[str, dict] = {
    "lead.created": {"lead_id": "L1"},
    "lead.qualified": {"lead_id": "L1", "team_id": "emea", "rep_id": "r1"},
    "activity.logged": {"team_id": "emea", "rep_id": "r1", "activity_type": "call"},
    "deal.created": {"deal_id": "D1", "team_id": "emea", "rep_id": "r1"},
    "deal.updated": {"deal_id": "D1"},
    "deal.closed": {"deal_id": "D1", "team_id": "emea", "rep_id": "r1", "outcome": "lost"},
    "subscription.started": {"subscription_id": "S1", "customer_id": "C1", "mrr": 99.5},
    "subscription.cancelled": {"subscription_id": "S1", "customer_id": "C1"},
    "spend.recorded": {"amount": 1200, "category": "marketing"},
}
REQUIRED: dict[str, list[str]] = {t: list(fields) for t, fields in MINIMAL.items()}
MONEY_TYPES = ("deal.created", "deal.updated", "deal.closed", "subscription.started",
               "spend.recorded")
OTHER_TYPES = tuple(t for t in EVENT_TYPES if t not in MONEY_TYPES)
WON = {"deal_id": "D1", "team_id": "emea", "rep_id": "r1", "outcome": "won",
       "amount": 5000, "customer_id": "C1"}


def message(event_type: str = "lead.created", **fields) -> dict:
    doc = {"event_id": "e-1", "type": event_type, "occurred_at": T0}
    doc.update(MINIMAL.get(event_type, {}))
    doc.update(fields)
    return doc


def run(doc, *, currency: str = CURRENCY, limit: int = LIMIT) -> Event | Rejection:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return decode(raw, currency=currency, max_event_bytes=limit)


def without(doc: dict, *names: str) -> dict:
    return {k: v for k, v in doc.items() if k not in names}


def assert_rejected(result, reason: str, field: str | None = None) -> None:
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result
    if field is not None:
        assert field in result.detail, result
    assert "\t" not in result.detail and "\n" not in result.detail


def assert_valid(result) -> Event:
    assert isinstance(result, Event), result
    return result


# --- valid events and their decoded values ---------------------------------------------------

@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_minimal_event_of_every_type_is_valid(event_type):
    event = assert_valid(run(message(event_type)))
    assert event.type == event_type
    assert event.event_id == "e-1"
    assert event.ts == T0_MICROS


def test_full_events_carry_their_fields():
    created = assert_valid(run(message("deal.created", amount=1234.56, lead_id="L9",
                                       customer_id="C9", currency="EUR")))
    assert (created.deal_id, created.team_id, created.rep_id) == ("D1", "emea", "r1")
    assert (created.amount, created.lead_id, created.customer_id) == (1_234_560_000, "L9", "C9")

    closed = assert_valid(run(message("deal.closed", **WON,
                                      opened_at="2026-01-01T00:00:00Z")))
    assert (closed.outcome, closed.amount, closed.customer_id) == ("won", 5_000_000_000, "C1")
    assert closed.opened_at == (datetime(2026, 1, 1, tzinfo=timezone.utc) - EPOCH) \
        // timedelta(microseconds=1)

    sub = assert_valid(run(message("subscription.started")))
    assert (sub.subscription_id, sub.customer_id, sub.mrr, sub.amount) == ("S1", "C1", 99_500_000,
                                                                           None)
    spend = assert_valid(run(message("spend.recorded", team_id="emea")))
    assert (spend.amount, spend.category, spend.team_id) == (1_200_000_000, "marketing", "emea")

    activity = assert_valid(run(message("activity.logged", lead_id="L1", deal_id="D1",
                                        duration_seconds=90.5)))
    assert (activity.activity_type, activity.lead_id, activity.deal_id) == ("call", "L1", "D1")

    lead = assert_valid(run(message("lead.created", team_id="t", rep_id="r", source="web")))
    assert (lead.lead_id, lead.team_id, lead.rep_id) == ("L1", "t", "r")


def test_absent_optional_fields_are_none():
    event = assert_valid(run(message("lead.created")))
    assert event.team_id is None and event.rep_id is None and event.amount is None


def test_unknown_fields_are_ignored():
    doc = message("lead.created", notes={"nested": [1, 2, None]}, Amount="x", tags=[],
                  x_trace_id=None, ingested_at="not a time")
    assert_valid(run(doc))


def test_duplicate_keys_last_one_wins():
    raw = b'{"event_id":"e","type":"lead.created","occurred_at":"' + T0.encode() + \
        b'","lead_id":"first","lead_id":"second"}'
    assert assert_valid(run(raw)).lead_id == "second"


def test_every_event_of_the_spec_example_is_valid():
    from pathlib import Path

    path = Path("/work/shared/spec/examples/small/events.jsonl")
    if not path.exists():
        pytest.skip("spec examples not available")
    decoder_results = [decode(line, currency="GBP", max_event_bytes=LIMIT)
                       for _, line in iter_lines(path)]
    assert decoder_results and all(isinstance(r, Event) for r in decoder_results)


# --- malformed_json, not_an_object, too_large -------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"", b"   ", b"{", b"not json", b"{'a': 1}", b'{"a":1,}', b'{"a":1} {"b":2}',
    b'{"amount": NaN}', b'{"amount": Infinity}', b'{"amount": -Infinity}', b'{"amount": 1e999}',
    b'{"event_id": "\xff"}', b'{"event_id": "\xc3"}', b'{"event_id": "\\ud800"}',
    b"\xef\xbb\xbf{}", b"\x00",
])
def test_not_json_is_malformed_json(raw):
    assert_rejected(run(raw), "malformed_json")


def test_a_message_without_value_is_malformed_json():
    assert_rejected(decode(None, currency=CURRENCY, max_event_bytes=LIMIT), "malformed_json")


@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b'"lead.created"', b"42", b"4.2", b"null",
                                 b"true", b"false"])
def test_json_that_is_not_an_object_is_not_an_object(raw):
    assert_rejected(run(raw), "not_an_object")


def test_size_limit_is_inclusive_and_checked_before_parsing():
    raw = orjson.dumps(message())
    assert_valid(run(raw, limit=len(raw)))
    assert_rejected(run(raw, limit=len(raw) - 1), "too_large", "bytes")
    assert_rejected(run(b"x" * 100, limit=99), "too_large")  # not JSON either: size wins


# --- envelope ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["event_id", "type", "occurred_at"])
def test_absent_or_null_envelope_field_is_missing_field(field):
    assert_rejected(run(without(message(), field)), "missing_field", field)
    assert_rejected(run(message(**{field: None})), "missing_field", field)


@pytest.mark.parametrize("value", ["lead.deleted", "", "Lead.Created", "lead.created ", 5, 1.5,
                                   True, False, [], ["lead.created"], {}])
def test_type_not_one_of_the_eight_is_unknown_type(value):
    assert_rejected(run(message(type=value)), "unknown_type", "type")


@pytest.mark.parametrize("value", [1, 1.0, None])
def test_schema_version_one_or_absent_is_accepted(value):
    assert_valid(run(message(schema_version=value)))


@pytest.mark.parametrize("value", [2, 0, -1, 1.5, 1.0000001, "1", "v1", True, False, [], [1], {}])
def test_other_schema_versions_are_unsupported(value):
    assert_rejected(run(message(schema_version=value)), "unsupported_schema_version",
                    "schema_version")


# --- identifiers ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["x", "x" * 128, "é" * 128, "rep 17", " ", "Zoë-№5",
                                   "a\u00a0b", "a\u0085b", "a\u2028b", "😀" * 128])
def test_identifiers_of_1_to_128_characters_without_controls_are_valid(value):
    event = assert_valid(run(message(event_id=value, lead_id=value)))
    assert event.event_id == value and event.lead_id == value


@pytest.mark.parametrize("value", ["", "x" * 129, "é" * 129, "a\u0000b", "a\u001fb", "a\u007fb",
                                   "a\tb", "a\nb", "ab\r", "\u0001"])
@pytest.mark.parametrize("field", ["event_id", "lead_id"])
def test_bad_identifiers_are_invalid_field(field, value):
    assert_rejected(run(message(**{field: value})), "invalid_field", field)


@pytest.mark.parametrize("value", [7, 7.0, True, [], {}, ["L1"]])
def test_identifiers_must_be_strings(value):
    assert_rejected(run(message(lead_id=value)), "invalid_field", "lead_id")


def test_control_characters_are_escaped_in_the_detail():
    result = run(message(lead_id="a\u0000\u007fb"))
    assert_rejected(result, "invalid_field", "lead_id")
    assert "\\u0000" in result.detail and "\\u007f" in result.detail
    assert all(ord(c) >= 0x20 and c != "\x7f" for c in result.detail)


# --- timestamps -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "2026-03-29T00:30:00Z", "2026-03-29T00:30:00z", "2026-03-29t00:30:00Z",
    "2026-03-29 00:30:00Z", "2026-03-29T00:30:00+00:00", "2026-03-29T00:30:00-00:00",
    "2026-03-29T01:30:00+01:00", "2026-03-28T19:30:00-05:00", "2026-03-29T06:00:00+05:30",
    "2026-03-29T00:30:00.000Z", "2026-03-29T00:30:00.0000000000Z",
    "2026-03-29T23:59:00+23:29", "2026-03-28T00:31:00-23:59",
])
def test_the_same_instant_in_any_zone_gives_the_same_microseconds(text):
    assert parse_timestamp(text) == T0_MICROS
    assert assert_valid(run(message(occurred_at=text))).ts == T0_MICROS


@pytest.mark.parametrize("text, micros", [
    ("2026-03-29T00:30:00.5Z", 500_000),
    ("2026-03-29T00:30:00.1Z", 100_000),
    ("2026-03-29T00:30:00.123456Z", 123_456),
    ("2026-03-29T00:30:00.1234569Z", 123_456),  # truncated, not rounded
    ("2026-03-29T00:30:00.999999999+00:00", 999_999),
    ("2026-03-29T00:30:00.000001Z", 1),
])
def test_fractions_of_any_length_are_truncated_to_microseconds(text, micros):
    assert parse_timestamp(text) == T0_MICROS + micros


@pytest.mark.parametrize("text, expected", [
    ("1970-01-01T00:00:00Z", 0),
    ("1969-12-31T23:59:59.999999Z", -1),
    ("0001-01-01T00:00:00Z", (datetime(1, 1, 1, tzinfo=timezone.utc) - EPOCH)
     // timedelta(microseconds=1)),
    ("9999-12-31T23:59:59.999999Z", (datetime(9999, 12, 31, 23, 59, 59, 999999,
                                              tzinfo=timezone.utc) - EPOCH)
     // timedelta(microseconds=1)),
    ("2024-02-29T12:00:00+12:00", (datetime(2024, 2, 29, tzinfo=timezone.utc) - EPOCH)
     // timedelta(microseconds=1)),
    ("2000-02-29T00:00:00Z", 951_782_400 * MICRO),
])
def test_timestamps_are_exact_integer_microseconds(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", [
    "2026-03-29T01:30:00",  # naive
    "2026-03-29 01:30:00",
    "2026-03-29",  # date only
    "2026-03-29T01:30Z",  # no seconds
    "20260329T013000Z",  # basic format
    "2026-03-29T013000Z",
    "2026-W13-7T01:30:00Z",  # week date
    "2026-088T01:30:00Z",  # ordinal date
    "2026-03-29T01:30:00,5Z",  # comma fraction
    "2026-03-29T01:30:00.Z",  # empty fraction
    "2026-03-29T01:30:00+0100", "2026-03-29T01:30:00+01", "2026-03-29T01:30:00+01:00:00",
    "2026-03-29T01:30:00 +01:00", "2026-03-29T01:30:00UTC", "2026-03-29T01:30:00GMT",
    "2026-03-29X01:30:00Z", "2026-03-29T01:30:00Zz",
    "2026-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z",  # not leap years
    "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z",
    "2026-01-00T00:00:00Z", "2026-01-32T00:00:00Z", "0000-01-01T00:00:00Z",
    "0000-02-29T00:00:00Z", "10000-01-01T00:00:00Z", "226-01-01T00:00:00Z",
    "2026-03-29T24:00:00Z", "2026-03-29T23:60:00Z", "2026-03-29T23:59:60Z",  # leap second
    "2026-03-29T01:30:00+24:00", "2026-03-29T01:30:00+01:60", "2026-03-29T01:30:00−01:00",
    "２０２６-03-29T01:30:00Z", "2026-03-29T01:30:00Z\n", "\n2026-03-29T01:30:00Z",
    " 2026-03-29T01:30:00Z", "2026-03-29T01:30:00Z ", "",
])
def test_timestamps_without_zone_or_not_rfc3339_are_invalid_field(text):
    assert parse_timestamp(text) is None
    assert_rejected(run(message(occurred_at=text)), "invalid_field", "occurred_at")
    assert_rejected(run(message("deal.closed", opened_at=text)), "invalid_field", "opened_at")


@pytest.mark.parametrize("value", [1774744200, 1774744200.5, True, [], {}])
def test_timestamps_must_be_strings(value):
    assert_rejected(run(message(occurred_at=value)), "invalid_field", "occurred_at")


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.builds(
                        lambda minutes: timezone(timedelta(minutes=minutes)),
                        st.integers(-(24 * 60 - 1), 24 * 60 - 1))),
       st.sampled_from(["T", "t", " "]))
def test_any_rfc3339_rendering_parses_to_the_exact_instant(moment, separator):
    text = moment.isoformat(sep=separator)
    expected = (moment - EPOCH) // timedelta(microseconds=1)
    assert parse_timestamp(text) == expected


# The renderings parse_timestamp reads itself (9 = any digit); everything else goes to the pattern.
COMMON_SHAPES = [f"9999-99-99{separator}99:99:99{fraction}{zone}"
                 for separator in ("T", " ")
                 for fraction in ["", *("." + "9" * digits for digits in range(1, 10))]
                 for zone in ("Z", "z", "+99:99", "-99:99")]


@settings(max_examples=1000)
@given(st.sampled_from(COMMON_SHAPES), st.data())
def test_the_shortcut_for_common_shapes_agrees_with_the_pattern(shape, data):
    # Random digits: mostly impossible dates and times, which both must refuse alike.
    digit = st.sampled_from("0123456789")
    text = "".join(data.draw(digit) if c == "9" else c for c in shape)
    assert parse_timestamp(text) == _parse_timestamp_by_pattern(text)


@settings(max_examples=500)
@given(st.integers(1, 9999), st.integers(1, 12), st.integers(1, 31), st.integers(0, 24),
       st.integers(0, 60), st.integers(0, 60), st.sampled_from(["", ".5", ".123456789"]),
       st.sampled_from(["Z", "z", "+00:00", "-23:59", "+24:00", "+05:60", "-00:00"]),
       st.sampled_from(["T", " ", "t"]))
def test_near_valid_timestamps_agree_with_the_pattern(year, month, day, hour, minute, second,
                                                      fraction, zone, separator):
    text = (f"{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}"
            f"{fraction}{zone}")
    assert parse_timestamp(text) == _parse_timestamp_by_pattern(text)


@st.composite
def common_renderings(draw) -> str:
    """A valid timestamp in one of COMMON_SHAPES: any date and time, 0–9 fraction digits."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    fraction = draw(st.sampled_from(["", *("." + "0" * n for n in range(1, 10))]))
    if fraction:
        fraction = "." + "".join(draw(st.sampled_from("0123456789")) for _ in fraction[1:])
    zone = draw(st.sampled_from(["Z", "z", "+", "-"]))
    if zone in "+-":
        zone += f"{draw(st.integers(0, 23)):02}:{draw(st.integers(0, 59)):02}"
    separator = draw(st.sampled_from("T "))
    m = moment
    return (f"{m.year:04}-{m.month:02}-{m.day:02}{separator}{m.hour:02}:{m.minute:02}:"
            f"{m.second:02}{fraction}{zone}")


@settings(max_examples=2000)
@given(common_renderings(), st.data())
def test_damaged_timestamps_agree_with_the_pattern(text, data):
    """One character replaced, inserted or removed anywhere in a valid timestamp: separators,
    signs, non-ASCII digits, letters. The shortcut must never accept what the pattern refuses."""
    chars = list(text)
    at = data.draw(st.sampled_from(range(len(chars) + 1)))  # uniform: integers() favours ends
    noise = data.draw(st.sampled_from(
        list("0123456789-:.+ TtZz/x_\u0663\uff11\u00b2") + ["", "00", "\u00a0"]))
    action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    if action == "insert":
        chars.insert(at, noise)
    elif at < len(chars):
        chars[at] = noise if action == "replace" else ""
    damaged = "".join(chars)
    assert parse_timestamp(damaged) == _parse_timestamp_by_pattern(damaged)


def test_timestamp_pattern_has_no_anchors_or_groups_that_would_change_its_meaning():
    # decode.py uses it with fullmatch; the schema wraps it in ^…$ (tested in test_schemas).
    assert not TIMESTAMP_PATTERN.startswith("^") and not TIMESTAMP_PATTERN.endswith("$")


# --- money and numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("value, micros", [
    (0, 0), (0.0, 0), (-0.0, 0), (5, 5_000_000), (19.99, 19_990_000), (0.1, 100_000),
    (0.000001, 1), (1234567.891234, 1_234_567_891_234), (10**15, 10**21),
    (1e300, round(1e300 * MICRO)), (1.7e308, int(1.7e308) * MICRO),
    (18446744073709551615, 18446744073709551615 * MICRO),
])
def test_money_becomes_exact_micro_units(value, micros):
    assert assert_valid(run(message("spend.recorded", amount=value))).amount == micros
    assert assert_valid(run(message("subscription.started", mrr=value))).mrr == micros


@pytest.mark.parametrize("value", [-1, -0.01, -1e-9, "100", "", True, False, [], {}, [1]])
@pytest.mark.parametrize("event_type, field", [
    ("spend.recorded", "amount"), ("subscription.started", "mrr"), ("deal.created", "amount"),
    ("deal.closed", "amount"),
])
def test_money_that_is_not_a_number_at_least_zero_is_invalid_field(event_type, field, value):
    assert_rejected(run(message(event_type, **{field: value})), "invalid_field", field)


@pytest.mark.parametrize("value", [0, 60, 90.5, 1e12])
def test_duration_seconds_at_least_zero_is_valid(value):
    assert_valid(run(message("activity.logged", duration_seconds=value)))


@pytest.mark.parametrize("value", [-1, -0.5, "60", True, [], {}])
def test_bad_duration_seconds_is_invalid_field(value):
    assert_rejected(run(message("activity.logged", duration_seconds=value)), "invalid_field",
                    "duration_seconds")


# --- enumerations and other strings ------------------------------------------------------------

@pytest.mark.parametrize("event_type, field, good, bad", [
    ("activity.logged", "activity_type", ["call", "email", "meeting", "demo", "other"],
     ["Call", "visit", "", 1, True]),
    ("deal.closed", "outcome", ["won", "lost"], ["WON", "open", "", 0, True]),
    ("spend.recorded", "category", ["marketing", "sales"], ["ops", "Sales", "", 2, []]),
])
def test_enumerations(event_type, field, good, bad):
    for value in good:
        extra = {"amount": 1, "customer_id": "C1"} if value == "won" else {}
        assert getattr(assert_valid(run(message(event_type, **{field: value}, **extra))),
                       field) == value
    for value in bad:
        assert_rejected(run(message(event_type, **{field: value})), "invalid_field", field)


@pytest.mark.parametrize("value", [5, True, [], {}])
def test_source_must_be_a_string(value):
    assert_rejected(run(message("lead.created", source=value)), "invalid_field", "source")


# --- required fields and null -------------------------------------------------------------------

@pytest.mark.parametrize("event_type, field",
                         [(t, f) for t, fields in REQUIRED.items() for f in fields])
def test_absent_or_null_required_field_is_missing_field(event_type, field):
    doc = message(event_type)
    result = run(without(doc, field))
    assert_rejected(result, "missing_field", field)
    assert event_type in result.detail
    assert_rejected(run({**doc, field: None}), "missing_field", field)


@pytest.mark.parametrize("event_type, field", [
    ("lead.created", "team_id"), ("lead.created", "rep_id"), ("lead.created", "source"),
    ("activity.logged", "lead_id"), ("activity.logged", "deal_id"),
    ("activity.logged", "duration_seconds"), ("deal.created", "amount"),
    ("deal.created", "lead_id"), ("deal.created", "customer_id"), ("deal.closed", "amount"),
    ("deal.closed", "customer_id"), ("deal.closed", "opened_at"), ("spend.recorded", "team_id"),
])
def test_null_optional_field_is_ignored(event_type, field):
    event = assert_valid(run(message(event_type, **{field: None})))
    if hasattr(event, field):
        assert getattr(event, field) is None


def test_won_close_requires_amount_and_customer():
    assert_valid(run(message("deal.closed", **WON)))
    assert_valid(run(message("deal.closed", **{**WON, "amount": 0})))
    for field in ("amount", "customer_id"):
        result = run(without(message("deal.closed", **WON), field))
        assert_rejected(result, "missing_field", field)
        assert "won" in result.detail
        assert_rejected(run(message("deal.closed", **{**WON, field: None})), "missing_field",
                        field)


def test_lost_close_needs_neither_amount_nor_customer():
    event = assert_valid(run(message("deal.closed", outcome="lost")))
    assert event.amount is None and event.customer_id is None
    event = assert_valid(run(message("deal.closed", outcome="lost", amount=10, customer_id="C")))
    assert event.amount == 10 * MICRO and event.customer_id == "C"


# --- currency -----------------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", MONEY_TYPES)
def test_currency_on_money_events(event_type):
    extra = WON if event_type == "deal.closed" else {}
    assert_valid(run(message(event_type, **extra, currency=CURRENCY)))
    assert_valid(run(message(event_type, **extra, currency=None)))
    for other in ("USD", "eur", "EUR ", ""):
        assert_rejected(run(message(event_type, **extra, currency=other)), "currency_mismatch",
                        "currency")
    for not_a_string in (978, True, ["EUR"], {"code": "EUR"}):
        assert_rejected(run(message(event_type, **extra, currency=not_a_string)),
                        "invalid_field", "currency")


@pytest.mark.parametrize("event_type", OTHER_TYPES)
@pytest.mark.parametrize("value", ["USD", 978, ["x"], None])
def test_currency_on_other_events_is_an_ignored_extra_field(event_type, value):
    assert_valid(run(message(event_type, currency=value)))


def test_reporting_currency_comes_from_the_caller():
    doc = message("spend.recorded", currency="GBP")
    assert_valid(run(doc, currency="GBP"))
    assert_rejected(run(doc, currency="EUR"), "currency_mismatch")


# --- check order --------------------------------------------------------------------------------

def test_check_order_is_deterministic():
    # size before JSON
    assert run(b"[" * 50, limit=10).reason == "too_large"
    # schema_version before the rest of the envelope
    assert run({"schema_version": 2}).reason == "unsupported_schema_version"
    # event_id, then type, then occurred_at
    assert "event_id" in run({"type": "nope"}).detail
    assert run({"event_id": "e", "type": "nope"}).reason == "unknown_type"
    assert run({"event_id": "e", "type": "lead.created", "lead_id": 5}).detail.startswith(
        "occurred_at")
    # the envelope before the type's fields
    assert run(message(occurred_at="bad", lead_id=None)).detail.startswith("occurred_at")
    # type fields in SPEC table order
    doc = message("deal.closed", **WON)
    assert run({**doc, "rep_id": 1, "deal_id": None}).detail.startswith("deal_id")
    assert run({**doc, "rep_id": 1, "outcome": "x"}).detail.startswith("rep_id")
    assert run({**doc, "outcome": "x", "opened_at": "bad"}).detail.startswith("outcome")
    # currency last
    assert run({**doc, "currency": "USD", "amount": None}).reason == "missing_field"
    assert run({**doc, "currency": "USD", "opened_at": "bad"}).reason == "invalid_field"
    assert run({**doc, "currency": "USD"}).reason == "currency_mismatch"


# --- the Decoder and the live clock checks ------------------------------------------------------

def test_decoder_takes_currency_and_size_limit_from_the_config():
    config = config_from_mapping({"money": {"currency": "GBP"},
                                  "limits": {"max_event_bytes": 200}})
    decoder = Decoder(config)
    assert_valid(decoder(orjson.dumps(message("spend.recorded", currency="GBP"))))
    assert_rejected(decoder(orjson.dumps(message("spend.recorded", currency="EUR"))),
                    "currency_mismatch")
    assert_rejected(decoder(orjson.dumps(message(notes="x" * 200))), "too_large")


def test_check_live_time_bounds_are_inclusive():
    now = T0_MICROS
    skew, days = 300, 800
    event = assert_valid(run(message()))

    def check(ts):
        event.ts = ts
        return check_live_time(event, now, max_future_skew_seconds=skew, retention_days=days)

    assert check(now) is None
    assert check(now + skew * MICRO) is None
    assert_rejected(check(now + skew * MICRO + 1), "future_timestamp", "occurred_at")
    assert check(now - days * 86_400 * MICRO) is None
    assert_rejected(check(now - days * 86_400 * MICRO - 1), "too_late", "occurred_at")


def test_decoder_applies_configured_live_limits():
    config = config_from_mapping({"limits": {"max_future_skew_seconds": 0,
                                             "retention_days": 800}})
    decoder = Decoder(config)
    event = assert_valid(run(message()))
    assert decoder.check_live_time(event, event.ts) is None
    assert decoder.check_live_time(event, event.ts - 1).reason == "future_timestamp"


# --- decode never raises --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from([
    "event_id", "type", "occurred_at", "schema_version", "currency", "lead_id", "team_id",
    "rep_id", "source", "activity_type", "deal_id", "duration_seconds", "amount", "customer_id",
    "outcome", "opened_at", "subscription_id", "mrr", "category",
])
likely_values = st.sampled_from([
    *EVENT_TYPES, "won", "lost", "call", "sales", "marketing", "EUR", "USD", T0,
    "2026-03-29T01:30:00", "x", "", "x" * 129, "a\u0000", 0, 1, 1.0, -1, 1e308, True, None,
]) | json_values
event_like = st.dictionaries(field_names, likely_values, max_size=12)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_decode_never_raises_on_arbitrary_bytes(raw):
    result = decode(raw, currency=CURRENCY, max_event_bytes=200)
    assert isinstance(result, (Event, Rejection))


@settings(max_examples=300)
@given(json_values)
def test_decode_never_raises_on_arbitrary_json(value):
    assert isinstance(run(value), (Event, Rejection))


@settings(max_examples=500)
@given(event_like, st.sampled_from(EVENT_TYPES))
def test_decode_never_raises_on_event_shaped_objects(doc, event_type):
    for candidate in (doc, {**message(event_type), **doc}):
        result = run(candidate)
        assert isinstance(result, (Event, Rejection))
        if isinstance(result, Rejection):
            assert result.detail and "\n" not in result.detail and "\t" not in result.detail


# --- iter_lines (SPEC §6.3) ---------------------------------------------------------------------

def write(tmp_path, data: bytes):
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    return path


def test_lines_are_numbered_physically_and_blank_lines_skipped(tmp_path):
    data = b'{"a":1}\r\n\n   \n\t\r\n\r\n{"b":2}\n x \n{"c":3}'
    assert list(iter_lines(write(tmp_path, data))) == [
        (1, b'{"a":1}'), (6, b'{"b":2}'), (7, b" x "), (8, b'{"c":3}')]


def test_only_one_trailing_cr_is_removed(tmp_path):
    assert list(iter_lines(write(tmp_path, b'{"a":1}\r\r\n'))) == [(1, b'{"a":1}\r')]


@pytest.mark.parametrize("data", [b"", b"\n", b"\n\n \n", b"\r\n", b"   "])
def test_files_with_only_blank_lines_yield_nothing(tmp_path, data):
    assert list(iter_lines(write(tmp_path, data))) == []


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
def test_lines_spanning_reads_are_reassembled(tmp_path, monkeypatch, chunk):
    import engine.jsonl

    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 7 % 23)) for i in range(40)]
    data = b"\r\n".join(lines[:20]) + b"\n\n" + b"\n".join(lines[20:])
    monkeypatch.setattr(engine.jsonl, "CHUNK_BYTES", chunk)
    got = list(iter_lines(write(tmp_path, data)))
    assert [line for _, line in got] == lines
    assert [n for n, _ in got] == list(range(1, 21)) + list(range(22, 42))


def test_a_missing_file_raises_when_called(tmp_path):
    with pytest.raises(FileNotFoundError):
        iter_lines(tmp_path / "missing.jsonl")


def test_crlf_lines_decode_like_lf_lines(tmp_path):
    doc = orjson.dumps(message())
    path = write(tmp_path, doc + b"\r\n" + doc + b"\n")
    results = [run(line) for _, line in iter_lines(path)]
    assert all(isinstance(r, Event) for r in results) and len(results) == 2


@pytest.mark.parametrize("value", [None, 5, b"2026-03-29T01:30:00Z", "\ud800",
                                   "2026-03-29T01:30:00\ud800"])
def test_parse_timestamp_refuses_what_is_not_a_timestamp_string(value):
    assert parse_timestamp(value) is None


# --- v2: deal.updated and the pipeline fields (SPEC §7.1, §7.2) ---------------------------------

STAGE_IDS = frozenset({"discovery", "proposal"})


def run_staged(doc) -> Event | Rejection:
    return decode(orjson.dumps(doc), currency=CURRENCY, max_event_bytes=LIMIT, stages=STAGE_IDS)


def test_deal_updated_carries_what_it_changes():
    event = assert_valid(run_staged(message(
        "deal.updated", stage="proposal", amount=1500.25, rep_id="r2", team_id="dach",
        expected_close_at="2026-04-30T00:00:00+02:00")))
    assert (event.type, event.deal_id, event.stage, event.amount, event.team_id,
            event.rep_id) == ("deal.updated", "D1", "proposal", 1_500_250_000, "dach", "r2")
    assert event.expected_close == parse_timestamp("2026-04-29T22:00:00Z")
    bare = assert_valid(run_staged(message("deal.updated")))
    assert (bare.stage, bare.amount, bare.expected_close, bare.team_id, bare.rep_id) == (
        None, None, None, None, None)


def test_deal_created_carries_stage_and_expected_close():
    event = assert_valid(run_staged(message(
        "deal.created", stage="discovery", expected_close_at="2026-05-01T00:00:00Z")))
    assert event.stage == "discovery"
    assert event.expected_close == parse_timestamp("2026-05-01T00:00:00Z")


@pytest.mark.parametrize("event_type", ["deal.created", "deal.updated"])
@pytest.mark.parametrize("stage", ["negotiation", "Discovery", 7, True, [], ""])
def test_a_stage_that_is_not_configured_is_invalid_field(event_type, stage):
    result = run_staged(message(event_type, stage=stage))
    assert_rejected(result, "invalid_field", "stage")
    assert "discovery" in result.detail and "proposal" in result.detail


@pytest.mark.parametrize("stage", ["negotiation", 7, None, {"a": 1}])
def test_without_configured_stages_stage_is_ignored_like_an_unknown_field(stage):
    event = assert_valid(run(message("deal.updated", stage=stage)))
    assert event.stage is None
    assert assert_valid(run(message("deal.created", stage=stage))).stage is None


def test_a_null_stage_counts_as_absent_with_stages_configured():
    assert assert_valid(run_staged(message("deal.updated", stage=None))).stage is None


@pytest.mark.parametrize("value", ["2026-04-30", "2026-04-30T00:00:00", 1714428000, True, ""])
def test_expected_close_at_follows_the_timestamp_rules(value):
    for event_type in ("deal.created", "deal.updated"):
        assert_rejected(run_staged(message(event_type, expected_close_at=value)),
                        "invalid_field", "expected_close_at")


def test_deal_updated_money_and_currency_rules():
    assert_rejected(run_staged(message("deal.updated", amount=-1)), "invalid_field", "amount")
    assert_rejected(run_staged(message("deal.updated", amount="10")), "invalid_field", "amount")
    assert_rejected(run_staged(message("deal.updated", currency="USD")), "currency_mismatch")
    assert_rejected(run_staged(message("deal.updated", team_id="")), "invalid_field", "team_id")
    assert_rejected(run_staged(without(message("deal.updated"), "deal_id")), "missing_field",
                    "deal_id")


def test_decoder_takes_the_stages_of_its_configuration():
    config = config_from_mapping({"money": {"currency": CURRENCY}, "pipeline": {"stages": [
        {"id": "discovery", "probability": 0.1, "category": "pipeline"}]}})
    decoder = Decoder(config)
    assert assert_valid(decoder(orjson.dumps(message("deal.updated", stage="discovery")))
                        ).stage == "discovery"
    assert_rejected(decoder(orjson.dumps(message("deal.updated", stage="proposal"))),
                    "invalid_field", "stage")
    unstaged = Decoder(config_from_mapping({"money": {"currency": CURRENCY}}))
    assert assert_valid(unstaged(orjson.dumps(message("deal.updated", stage="x")))).stage is None
