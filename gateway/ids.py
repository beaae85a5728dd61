"""Deterministic event ids, and CRM times rendered as contract timestamps.

Why derived ids: a CRM retries a delivery it thinks failed; the same change must then give the
same ``event_id``, so that the engine counts it once (SPEC §1.1). Ids are a hash of the source
name and what identifies the change in the CRM (object, id, change time, kind), never of the
arrival time or of a per-attempt field.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def event_id(source: str, *parts: object) -> str:
    """``<source>-<24 hex digits>``: the same parts always give the same id."""
    digest = hashlib.sha256("\x1f".join([source, *map(str, parts)]).encode()).hexdigest()
    return f"{source}-{digest[:24]}"


def versioned_id(source: str, version_ms: int, *parts: object) -> str:
    """``<source>-<16 hex digits>-v<version>``: one logical event in successive versions.

    For a correction of a close (a won deal's amount edited): the corrected ``deal.closed``
    keeps the close's ``occurred_at``, so the engine breaks the tie by ``event_id`` (SPEC §3),
    and the version — the CRM's change time, zero-padded — makes the latest correction the
    greatest id. A redelivery has the same change time, hence the same id.
    """
    digest = hashlib.sha256("\x1f".join([source, *map(str, parts)]).encode()).hexdigest()
    return f"{source}-{digest[:16]}-v{max(version_ms, 0):015d}"


def epoch_ms(timestamp: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 timestamp (as :func:`parse_crm_time` makes)."""
    instant = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (instant - _EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> str:
    """An RFC 3339 UTC timestamp (milliseconds) for milliseconds since the epoch."""
    try:
        instant = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise ValueError(f"not a time: {ms} ms since the epoch") from None
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_crm_time(text: str) -> str:
    """A CRM's date-time text as an RFC 3339 timestamp with a zone; naive text is UTC.

    Pipedrive (v1 ``2024-09-27 14:25:27``, v2 ``2024-09-27T14:25:27Z``) and Salesforce
    (``2024-09-27T14:25:27.000Z``) both document UTC. Raises ``ValueError`` otherwise.
    """
    if not isinstance(text, str):
        raise ValueError(f"not a date-time: {text!r}")
    value = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def local_midnight(day: str, zone: ZoneInfo) -> str:
    """A CRM close *date* as the local midnight that starts it (SPEC §7.2)."""
    if not isinstance(day, str):
        raise ValueError(f"not a date: {day!r}")
    start = datetime.combine(date.fromisoformat(day.strip()[:10]), time(0), tzinfo=zone)
    return start.isoformat()


def money(value: object) -> float | None:
    """A CRM amount (number or numeric text) as a float; ``None`` when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not an amount: {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"not an amount: {value!r}") from None
