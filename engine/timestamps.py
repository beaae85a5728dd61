"""Parsing the command line's and the API's ``as_of`` instants.

Why strict: an ``as_of`` without a zone would silently mean the server's local time; the
contract's instants always carry their offset.
"""

from __future__ import annotations

import time
from datetime import datetime

from engine.calendar import to_micros
from engine.event import MICRO


def parse_instant(text: str) -> int:
    """An RFC 3339 instant with a zone as µs since the epoch; ``ValueError`` otherwise."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}") from None
    if dt.tzinfo is None:
        raise ValueError(f"timestamp needs a zone (Z or ±hh:mm): {text!r}")
    return to_micros(dt)


def now_micros() -> int:
    return time.time_ns() // (1_000_000_000 // MICRO)
