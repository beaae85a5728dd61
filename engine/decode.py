"""Raw message bytes in, a typed ``Event`` or a ``Rejection`` out (SPEC §1, §6).

This is the one gate every message passes, in the live engine and in the file commands alike,
so that both reject the same inputs for the same reasons. It never raises on input: whatever
the bytes, the answer is an ``Event`` or a ``Rejection`` naming the field.

Check order (the first failing check decides the reason; deterministic so that the dead-letter
topic and ``kpi-engine validate`` agree):

1. ``too_large``: ``len(raw) > max_event_bytes``, before any parsing.
2. ``malformed_json``: not UTF-8 JSON (orjson: invalid UTF-8, ``NaN``/``Infinity``, numbers that
   overflow a double such as ``1e999``, a byte-order mark, an empty message).
3. ``not_an_object``: valid JSON but not an object.
4. The envelope: ``schema_version`` (first, because a message of another version is judged by
   rules this engine does not know, so any other complaint about it would mislead), then
   ``event_id``, ``type``, ``occurred_at``.
5. The type's own fields in the order of the SPEC §1.2 table; ``deal.closed`` needs ``amount``
   and ``customer_id`` once ``outcome`` is ``won``.
6. ``currency``, only on the money-carrying types of SPEC §6.4.

Decisions where the SPEC is silent:

- ``type`` absent or null is ``missing_field``; present but not a string, or not one of the nine
  types, is ``unknown_type``.
- ``schema_version``: absent or null means version 1. Anything else that is not the JSON number
  1 is ``unsupported_schema_version`` (``2``, ``"1"``, ``true``). ``1.0`` *is* accepted: JSON has
  one number type and JSON Schema 2020-12 counts ``1.0`` as the integer 1, so the published
  schemas could not reject it and would disagree with the engine.
- Identifiers count Unicode code points (1–128); only U+0000–U+001F and U+007F are forbidden, so
  spaces and non-ASCII text are allowed.
- Timestamps: ``YYYY-MM-DD[Tt ]HH:MM:SS[.fraction](Z|z|±HH:MM)`` with a real calendar date (year
  0001–9999), hours 00–23, minutes and seconds 00–59 (a leap second ``:60`` is rejected, as
  by most parsers), offsets up to ±23:59; ``-00:00`` means UTC. Fractions of any length are
  truncated to microseconds.
- Money beyond 1.8e302 (whose micro-units overflow a double) is converted exactly from its
  integral value instead of failing.
- ``currency`` must equal the configured code exactly (``"gbp"`` is not ``"GBP"``); a non-string
  currency is ``invalid_field``. On the other four types it is an unknown field and ignored.
- ``source`` is any string; ``duration_seconds`` and ``source`` are validated but not stored.
- Duplicate keys in one object: the last one wins (orjson, like most JSON parsers).
- A message without a value (a Kafka tombstone, ``None``) is ``malformed_json``.
- ``stage`` (``deal.created``, ``deal.updated``; SPEC §7.1): with stages configured, a non-null
  value that is not a configured stage id (or not a string) is ``invalid_field`` naming the
  configured ids; with none configured it is not read at all, like an unknown field.
- A ``deal.updated`` that sets nothing (only ``deal_id``) is valid: it re-opens a closed deal
  or confirms an open one (SPEC §7.3), which is what the CRM said happened.

Speed matters (the file report must run at ≥ 200k events/s on one core): one ``orjson.loads``,
one small hand-written builder per type that reads like its SPEC table row, checks whose fast
path is a few type tests, exceptions only on the rejection path, and no caches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import orjson
from mypy_extensions import i64

from engine.config import Config
from engine.event import (
    ACTIVITY_TYPES,
    EVENT_TYPES,
    MICRO,
    OUTCOMES,
    SPEND_CATEGORIES,
    Event,
    Rejection,
    to_micros,
)

__all__ = [
    "IDENTIFIER_MAX_CHARS",
    "MONEY_EVENT_TYPES",
    "TIMESTAMP_PATTERN",
    "Decoder",
    "check_live_time",
    "decode",
    "parse_timestamp",
]

IDENTIFIER_MAX_CHARS: Final = 128
MONEY_EVENT_TYPES = frozenset(
    {"deal.created", "deal.updated", "deal.closed", "subscription.started", "spend.recorded"})

# RFC 3339 date-time with a zone, calendar-exact (days per month, leap years, no year 0000).
# schemas/envelope.schema.json carries the same text between ^ and $; a test keeps them equal.
_LOCAL_DATE_TIME = (
    r"(?!0000)"
    r"(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
    r"[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
)
_ZONE = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
TIMESTAMP_PATTERN = _LOCAL_DATE_TIME + _ZONE
_timestamp_parts = re.compile(f"({_LOCAL_DATE_TIME})({_ZONE})").fullmatch
_control_character: Final = re.compile(r"[\x00-\x1f\x7f]").search
_from_iso = datetime.fromisoformat
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_DAY_MICROS: Final = 86_400 * MICRO
_INFINITY: Final = float("inf")
_loads: Final = orjson.loads
_JSONDecodeError: Final = orjson.JSONDecodeError


# --- timestamps ----------------------------------------------------------------------------------
#
# TIMESTAMP_PATTERN is the rule. Matching it costs more than everything else about a timestamp,
# so the common renderings take a shortcut with the same outcome: the digits are masked and the
# resulting shape is looked up, which fixes where every digit is; the fields are then read as
# integers and checked against the calendar (days per month, leap years, no year 0000) and the
# clock (hour ≤ 23, minute and second ≤ 59) exactly as the pattern does; the zone table holds
# only valid offsets. Other shapes (a lower-case ``t``, fractions over nine digits, anything
# odd) take the pattern. Tests hold the shortcut to the pattern on random near-valid input.

def _zone_offsets() -> dict[str, int]:
    """Every zone designator the pattern admits, mapped to its offset from UTC in µs."""
    offsets = {"Z": 0, "z": 0}
    for hours in range(24):
        for minutes in range(60):
            micros = (hours * 3600 + minutes * 60) * MICRO
            offsets[f"+{hours:02}:{minutes:02}"] = micros
            offsets[f"-{hours:02}:{minutes:02}"] = -micros
    return offsets


_ZONE_OFFSET_MICROS: Final = _zone_offsets()


_DAYS_IN_MONTH: Final[tuple[int, ...]] = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_timestamp(text: Any) -> int | None:
    """Exact microseconds since the epoch of an RFC 3339 timestamp with a zone, else ``None``.

    The rule for ``occurred_at`` and ``opened_at``; also meant for ``--as-of`` and ``as_of``.
    The common renderings (``T`` or space, up to nine fraction digits, ``Z``/``z`` or an
    offset) are read digit by digit from their bytes: integer arithmetic, no datetime objects,
    which is what the compiled core does fastest. Whatever this shortcut is not sure of —
    another shape, a field out of range — is left to the pattern, which decides.
    """
    if type(text) is not str:
        return None
    string: str = text  # typed, so that the compiled build uses native str and bytes operations
    size = len(string)
    if size < 20 or size > 35 or not string.isascii():
        return _parse_timestamp_by_pattern(string)
    b = string.encode()
    last = b[size - 1]
    offset: i64  # i64: plain machine integers in the compiled build (the µs fit easily)
    if last == 90 or last == 122:  # Z, z
        offset = 0
        local_end = size - 1
    else:
        sign = b[size - 6]
        zone_hour = _two_digits(b, size - 5)
        zone_minute = _two_digits(b, size - 2)
        if ((sign != 43 and sign != 45) or b[size - 3] != 58 or not 0 <= zone_hour <= 23
                or not 0 <= zone_minute <= 59):
            return _parse_timestamp_by_pattern(string)
        offset = (zone_hour * 3600 + zone_minute * 60) * 1_000_000
        if sign == 45:  # '-': local time behind UTC
            offset = -offset
        local_end = size - 6
    if (local_end < 19 or b[4] != 45 or b[7] != 45 or (b[10] != 84 and b[10] != 32)
            or b[13] != 58 or b[16] != 58):
        return _parse_timestamp_by_pattern(string)
    century = _two_digits(b, 0)
    year_of_century = _two_digits(b, 2)
    year = century * 100 + year_of_century
    month = _two_digits(b, 5)
    day = _two_digits(b, 8)
    hour = _two_digits(b, 11)
    minute = _two_digits(b, 14)
    second = _two_digits(b, 17)
    if (century < 0 or year_of_century < 0 or year == 0 or not 1 <= month <= 12 or day < 1 or not 0 <= hour <= 23
            or not 0 <= minute <= 59 or not 0 <= second <= 59):
        return _parse_timestamp_by_pattern(string)
    if day > _DAYS_IN_MONTH[month] and not (
            month == 2 and day == 29 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return _parse_timestamp_by_pattern(string)
    micros: i64 = 0
    if local_end > 19:  # a fraction: b[19] is the dot, then 1–9 digits, truncated to µs
        if b[19] != 46 or local_end == 20 or local_end > 29:
            return _parse_timestamp_by_pattern(string)
        position = 20
        while position < local_end:
            digit: i64 = b[position] - 48
            if not 0 <= digit <= 9:
                return _parse_timestamp_by_pattern(string)
            if position < 26:
                micros = micros * 10 + digit
            position += 1
        while position < 26:
            micros *= 10
            position += 1
    # Days from the civil date (proleptic Gregorian), after H. Hinnant's days_from_civil.
    y = year - 1 if month <= 2 else year
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146_097 + day_of_era - 719_468
    return (days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000 + micros - offset


def _two_digits(b: bytes, at: int) -> i64:
    """The two ASCII digits at ``b[at:at + 2]`` as a number, or -1 if they are not digits."""
    high: i64 = b[at] - 48
    low: i64 = b[at + 1] - 48
    if 0 <= high <= 9 and 0 <= low <= 9:
        return high * 10 + low
    return -1


def _parse_timestamp_by_pattern(text: str) -> int | None:
    """:func:`parse_timestamp` by the pattern alone: the reference the shortcut must agree with."""
    parts = _timestamp_parts(text)
    if parts is None:
        return None
    local, zone = parts.groups()
    moment = _from_iso(local.upper())  # fromisoformat refuses the lower-case t RFC 3339 allows
    delta = moment - _NAIVE_EPOCH
    return (delta.days * _DAY_MICROS + delta.seconds * MICRO + delta.microseconds
            - _ZONE_OFFSET_MICROS[zone])


# --- rejections ---------------------------------------------------------------------------------

class _Reject(Exception):
    """Carries a rejection out of the nested field checks; never escapes this module."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _describe(value: Any) -> str:
    """A short, single-line rendering of an offending JSON value for a detail message."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if type(value) is str:
        shown = value if len(value) <= 40 else value[:40] + "…"
        try:  # JSON-quoted: orjson escapes U+0000–U+001F, U+007F is escaped here as well
            return orjson.dumps(shown).decode().replace("\x7f", "\\u007f")
        except orjson.JSONEncodeError:  # a lone surrogate, which JSON input cannot produce
            return ascii(shown)
    if type(value) is dict:
        return "an object"
    if type(value) is list:
        return "an array"
    return repr(value)


# --- field checks: the value to store, or _Reject ----------------------------------------------
#
# The fast path of each check is a few type and range tests on the common, valid value; the
# slow path builds the detail message. ``doc`` is the decoded JSON object; ``context``
# completes "… is required for <context>".

def _identifier(name: str, value: Any) -> str:
    if type(value) is not str:
        raise _Reject("invalid_field", f"{name} must be a string, got {_describe(value)}")
    if not 0 < len(value) <= IDENTIFIER_MAX_CHARS:
        raise _Reject("invalid_field", f"{name} must be 1–{IDENTIFIER_MAX_CHARS} characters "
                                       f"long, got {len(value)}")
    # isprintable() is the quick yes; it also says no to allowed characters such as U+00A0.
    if not value.isprintable() and _control_character(value) is not None:
        raise _Reject("invalid_field",
                      f"{name} must not contain control characters, got {_describe(value)}")
    return value


def _required_identifier(doc: dict[str, Any], name: str, context: str) -> str:
    value = doc.get(name)
    if type(value) is str and 0 < len(value) <= IDENTIFIER_MAX_CHARS and value.isprintable():
        return value
    if value is None:
        raise _Reject("missing_field", f"{name} is required for {context}")
    return _identifier(name, value)


def _optional_identifier(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None or (type(value) is str and 0 < len(value) <= IDENTIFIER_MAX_CHARS
                         and value.isprintable()):
        return value
    return _identifier(name, value)


def _required_choice(doc: dict[str, Any], name: str, context: str, choices: tuple[str, ...]) -> str:
    value = doc.get(name)
    if type(value) is str and value in choices:
        return value
    if value is None:
        raise _Reject("missing_field", f"{name} is required for {context}")
    raise _Reject("invalid_field",
                  f"{name} must be one of {', '.join(choices)}, got {_describe(value)}")


def _optional_string(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None or type(value) is str:
        return value
    raise _Reject("invalid_field", f"{name} must be a string, got {_describe(value)}")


def _money(name: str, value: Any) -> int:
    kind = type(value)
    if (kind is not int and kind is not float) or not 0 <= value < _INFINITY:
        raise _Reject("invalid_field",
                      f"{name} must be a number ≥ 0 (not a string or boolean), "
                      f"got {_describe(value)}")
    try:
        return to_micros(value)
    except OverflowError:  # value * 10**6 exceeds a double; such a float is integral anyway
        return int(value) * MICRO


def _required_money(doc: dict[str, Any], name: str, context: str) -> int:
    value = doc.get(name)
    if value is None:
        raise _Reject("missing_field", f"{name} is required for {context}")
    return _money(name, value)


def _optional_money(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    return None if value is None else _money(name, value)


def _optional_seconds(doc: dict[str, Any], name: str) -> None:
    """Validated, not stored: no KPI uses an activity's duration."""
    value = doc.get(name)
    if value is None:
        return
    kind = type(value)
    if (kind is not int and kind is not float) or not 0 <= value < _INFINITY:
        raise _Reject("invalid_field", f"{name} must be a number ≥ 0, got {_describe(value)}")


def _timestamp(name: str, value: Any) -> int:
    micros = parse_timestamp(value)
    if micros is None:
        raise _Reject("invalid_field",
                      f"{name} must be an RFC 3339 timestamp with a zone "
                      f"(e.g. 2026-03-29T01:30:00+01:00), got {_describe(value)}")
    return micros


def _optional_timestamp(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    return None if value is None else _timestamp(name, value)


def _optional_stage(doc: dict[str, Any], stages: frozenset[str] | None) -> str | None:
    """SPEC §7.1: a configured stage id, or ``None`` (also whenever no stages are configured)."""
    if not stages:
        return None
    value = doc.get("stage")
    if value is None or (type(value) is str and value in stages):
        return value
    shown = ", ".join(sorted(stages))
    if len(shown) > 200:
        shown = shown[:200] + "…"
    raise _Reject("invalid_field",
                  f"stage must be a configured stage id ({shown}), got {_describe(value)}")


def _check_currency(doc: dict[str, Any], currency: str) -> None:
    code = doc.get("currency")
    if code is None or code == currency:
        return
    if type(code) is not str:
        raise _Reject("invalid_field", f"currency must be a string, got {_describe(code)}")
    raise _Reject("currency_mismatch",
                  f"currency {_describe(code)} is not the reporting currency "
                  f"{_describe(currency)} ([money] currency)")


# --- one builder per type, in the order of the SPEC §1.2 table ---------------------------------
#
# Events are built positionally (keyword construction costs twice as much), in this order:
_EVENT_FIELDS = ("event_id", "type", "ts", "team_id", "rep_id", "lead_id", "deal_id",
                 "customer_id", "subscription_id", "activity_type", "outcome", "category",
                 "amount", "mrr", "opened_at", "stage", "expected_close")
assert tuple(f.name for f in dataclass_fields(Event)) == _EVENT_FIELDS, "Event changed shape"


def _lead_created(doc: dict[str, Any], event_id: str, ts: int, currency: str) -> Event:
    lead_id = _required_identifier(doc, "lead_id", "lead.created")
    team_id = _optional_identifier(doc, "team_id")
    rep_id = _optional_identifier(doc, "rep_id")
    _optional_string(doc, "source")
    return Event(event_id, "lead.created", ts, team_id, rep_id, lead_id)


def _lead_qualified(doc: dict[str, Any], event_id: str, ts: int, currency: str) -> Event:
    lead_id = _required_identifier(doc, "lead_id", "lead.qualified")
    team_id = _required_identifier(doc, "team_id", "lead.qualified")
    rep_id = _required_identifier(doc, "rep_id", "lead.qualified")
    return Event(event_id, "lead.qualified", ts, team_id, rep_id, lead_id)


def _activity_logged(doc: dict[str, Any], event_id: str, ts: int, currency: str) -> Event:
    team_id = _required_identifier(doc, "team_id", "activity.logged")
    rep_id = _required_identifier(doc, "rep_id", "activity.logged")
    activity_type = _required_choice(doc, "activity_type", "activity.logged", ACTIVITY_TYPES)
    lead_id = _optional_identifier(doc, "lead_id")
    deal_id = _optional_identifier(doc, "deal_id")
    _optional_seconds(doc, "duration_seconds")
    return Event(event_id, "activity.logged", ts, team_id, rep_id, lead_id, deal_id,
                 None, None, activity_type)


def _deal_created(doc: dict[str, Any], event_id: str, ts: int, currency: str,
                  stages: frozenset[str] | None) -> Event:
    deal_id = _required_identifier(doc, "deal_id", "deal.created")
    team_id = _required_identifier(doc, "team_id", "deal.created")
    rep_id = _required_identifier(doc, "rep_id", "deal.created")
    amount = _optional_money(doc, "amount")
    lead_id = _optional_identifier(doc, "lead_id")
    customer_id = _optional_identifier(doc, "customer_id")
    stage = _optional_stage(doc, stages)
    expected_close = _optional_timestamp(doc, "expected_close_at")
    _check_currency(doc, currency)
    return Event(event_id, "deal.created", ts, team_id, rep_id, lead_id, deal_id, customer_id,
                 None, None, None, None, amount, None, None, stage, expected_close)


def _deal_updated(doc: dict[str, Any], event_id: str, ts: int, currency: str,
                  stages: frozenset[str] | None) -> Event:
    deal_id = _required_identifier(doc, "deal_id", "deal.updated")
    stage = _optional_stage(doc, stages)
    amount = _optional_money(doc, "amount")
    expected_close = _optional_timestamp(doc, "expected_close_at")
    team_id = _optional_identifier(doc, "team_id")
    rep_id = _optional_identifier(doc, "rep_id")
    _check_currency(doc, currency)
    return Event(event_id, "deal.updated", ts, team_id, rep_id, None, deal_id, None,
                 None, None, None, None, amount, None, None, stage, expected_close)


def _deal_closed(doc: dict[str, Any], event_id: str, ts: int, currency: str) -> Event:
    deal_id = _required_identifier(doc, "deal_id", "deal.closed")
    team_id = _required_identifier(doc, "team_id", "deal.closed")
    rep_id = _required_identifier(doc, "rep_id", "deal.closed")
    outcome = _required_choice(doc, "outcome", "deal.closed", OUTCOMES)
    amount: int | None
    customer_id: str | None
    if outcome == "won":
        amount = _required_money(doc, "amount", "deal.closed with outcome won")
        customer_id = _required_identifier(doc, "customer_id", "deal.closed with outcome won")
    else:
        amount = _optional_money(doc, "amount")
        customer_id = _optional_identifier(doc, "customer_id")
    opened_at = _optional_timestamp(doc, "opened_at")
    _check_currency(doc, currency)
    return Event(event_id, "deal.closed", ts, team_id, rep_id, None, deal_id, customer_id,
                 None, None, outcome, None, amount, None, opened_at)


def _subscription_started(doc: dict[str, Any], event_id: str, ts: int, currency: str) -> Event:
    subscription_id = _required_identifier(doc, "subscription_id", "subscription.started")
    customer_id = _required_identifier(doc, "customer_id", "subscription.started")
    mrr = _required_money(doc, "mrr", "subscription.started")
    _check_currency(doc, currency)
    return Event(event_id, "subscription.started", ts, None, None, None, None, customer_id,
                 subscription_id, None, None, None, None, mrr)


def _subscription_cancelled(doc: dict[str, Any], event_id: str, ts: int, currency: str) -> Event:
    subscription_id = _required_identifier(doc, "subscription_id", "subscription.cancelled")
    customer_id = _required_identifier(doc, "customer_id", "subscription.cancelled")
    return Event(event_id, "subscription.cancelled", ts, None, None, None, None, customer_id,
                 subscription_id)


def _spend_recorded(doc: dict[str, Any], event_id: str, ts: int, currency: str) -> Event:
    amount = _required_money(doc, "amount", "spend.recorded")
    category = _required_choice(doc, "category", "spend.recorded", SPEND_CATEGORIES)
    team_id = _optional_identifier(doc, "team_id")
    _check_currency(doc, currency)
    return Event(event_id, "spend.recorded", ts, team_id, None, None, None, None, None, None,
                 None, category, amount)


_BUILDERS: dict[str, Callable[..., Event]] = {
    "lead.created": _lead_created,
    "lead.qualified": _lead_qualified,
    "activity.logged": _activity_logged,
    "deal.created": _deal_created,
    "deal.updated": _deal_updated,
    "deal.closed": _deal_closed,
    "subscription.started": _subscription_started,
    "subscription.cancelled": _subscription_cancelled,
    "spend.recorded": _spend_recorded,
}
assert tuple(_BUILDERS) == EVENT_TYPES
_EVENT_TYPE_LIST: Final = ", ".join(EVENT_TYPES)


# --- the decoder -----------------------------------------------------------------------------

def decode(raw: bytes | None, *, currency: str, max_event_bytes: int,
           stages: frozenset[str] | None = None) -> Event | Rejection:
    """Decode one message (SPEC §1, §6, §7) into an :class:`Event`, or say why it is invalid.

    ``currency`` is the configured reporting currency, ``max_event_bytes`` the size limit,
    ``stages`` the configured stage ids (none: ``stage`` is ignored, SPEC §7.1).
    The live-only checks (``future_timestamp``, ``too_late``) are :func:`check_live_time`.
    """
    return _decode(raw, currency, max_event_bytes, stages)


def _decode(raw: bytes | None, currency: str, max_event_bytes: int,
            stages: frozenset[str] | None) -> Event | Rejection:
    if raw is None:
        return Rejection("malformed_json", "the message has no value")
    size = len(raw)
    if size > max_event_bytes:
        return Rejection("too_large", f"the message is {size} bytes, over the limit of "
                                      f"{max_event_bytes} bytes ([limits] max_event_bytes)")
    try:
        document = _loads(raw)
    except _JSONDecodeError as exc:
        return Rejection("malformed_json", f"not valid JSON: {exc}")
    if type(document) is not dict:
        return Rejection("not_an_object",
                         f"an event must be a JSON object, got {_describe(document)}")
    doc: dict[str, Any] = document
    try:
        version = doc.get("schema_version")
        if version is not None and (type(version) is bool or version != 1):
            raise _Reject("unsupported_schema_version",
                          f"schema_version {_describe(version)} is not supported "
                          "(this engine reads version 1)")

        event_id = doc.get("event_id")
        if not (type(event_id) is str and 0 < len(event_id) <= IDENTIFIER_MAX_CHARS
                and event_id.isprintable()):
            event_id = _required_identifier(doc, "event_id", "every event")

        event_type = doc.get("type")
        if not (type(event_type) is str and event_type in _BUILDERS):
            if event_type is None:
                raise _Reject("missing_field", "type is required for every event")
            raise _Reject("unknown_type", f"type must be one of {_EVENT_TYPE_LIST}, "
                                          f"got {_describe(event_type)}")

        ts = parse_timestamp(doc.get("occurred_at"))
        if ts is None:
            occurred_at = doc.get("occurred_at")
            if occurred_at is None:
                raise _Reject("missing_field", "occurred_at is required for every event")
            ts = _timestamp("occurred_at", occurred_at)  # raises with the detail
        # Direct calls (most frequent first): the compiled build then calls them natively.
        if event_type == "activity.logged":
            return _activity_logged(doc, event_id, ts, currency)
        if event_type == "lead.created":
            return _lead_created(doc, event_id, ts, currency)
        if event_type == "lead.qualified":
            return _lead_qualified(doc, event_id, ts, currency)
        if event_type == "deal.created":
            return _deal_created(doc, event_id, ts, currency, stages)
        if event_type == "deal.updated":
            return _deal_updated(doc, event_id, ts, currency, stages)
        if event_type == "deal.closed":
            return _deal_closed(doc, event_id, ts, currency)
        if event_type == "subscription.started":
            return _subscription_started(doc, event_id, ts, currency)
        if event_type == "subscription.cancelled":
            return _subscription_cancelled(doc, event_id, ts, currency)
        return _spend_recorded(doc, event_id, ts, currency)
    except _Reject as rejected:
        return Rejection(rejected.reason, rejected.detail)


class Decoder:
    """:func:`decode` bound to a configuration's currency, size limit and stages.

    ``decoder(raw)`` decodes; ``decoder.check_live_time(event, now_us)`` applies the live
    engine's clock checks with the configured skew and retention.
    """

    __slots__ = ("currency", "max_event_bytes", "max_future_skew_seconds", "retention_days",
                 "stages")

    def __init__(self, config: Config) -> None:
        self.currency: str = config.money.currency
        self.stages: frozenset[str] | None = config.pipeline.stage_ids or None
        self.max_event_bytes: int = config.limits.max_event_bytes
        self.max_future_skew_seconds: int = config.limits.max_future_skew_seconds
        self.retention_days: int = config.limits.retention_days

    def __call__(self, raw: bytes | None) -> Event | Rejection:
        return _decode(raw, self.currency, self.max_event_bytes, self.stages)

    def check_live_time(self, event: Event, now_us: int) -> Rejection | None:
        return check_live_time(event, now_us,
                               max_future_skew_seconds=self.max_future_skew_seconds,
                               retention_days=self.retention_days)


def check_live_time(event: Event, now_us: int, *, max_future_skew_seconds: int,
                    retention_days: int) -> Rejection | None:
    """The live engine's clock checks (SPEC §1.3), ``None`` when the event may be counted.

    ``future_timestamp`` when ``occurred_at`` is more than the skew ahead of ``now_us``,
    ``too_late`` when it is more than ``retention_days`` behind it (state for it is gone).
    Both bounds are inclusive: exactly the skew ahead, or exactly the retention behind, counts.
    """
    ahead_micros: int | float = event.ts - now_us  # a Python division below in both builds
    if ahead_micros > max_future_skew_seconds * MICRO:
        return Rejection("future_timestamp",
                         f"occurred_at {_format_micros(event.ts)} is {ahead_micros / MICRO:.0f} s "
                         f"ahead of the clock ({_format_micros(now_us)}), more than "
                         f"{max_future_skew_seconds} s ([limits] max_future_skew_seconds)")
    if -ahead_micros > retention_days * _DAY_MICROS:
        return Rejection("too_late",
                         f"occurred_at {_format_micros(event.ts)} is more than {retention_days} "
                         f"days before the clock ({_format_micros(now_us)}) "
                         "([limits] retention_days)")
    return None


def _format_micros(micros: int) -> str:
    try:
        return (_EPOCH + timedelta(microseconds=micros)).isoformat()
    except OverflowError:
        return f"{micros} µs since the epoch"
