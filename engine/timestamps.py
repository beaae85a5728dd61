"""Parsing the command line's and the API's ``as_of`` instants.

Why the event rule: an ``as_of`` follows the same RFC 3339 rule as ``occurred_at`` (a zone is
required; an instant without one would silently mean the server's local time), so a checker
can pass any instant it took from an event.
"""

from __future__ import annotations

import time

from engine.decode import parse_timestamp
from engine.event import MICRO


def parse_instant(text: str) -> int:
    """An RFC 3339 instant with a zone as µs since the epoch; ``ValueError`` otherwise."""
    micros = parse_timestamp(text.strip()) if isinstance(text, str) else None
    if micros is None:
        raise ValueError(f"not an RFC 3339 timestamp with a zone (Z or ±hh:mm): {text!r}")
    return micros


#: The instants the API answers for: the report reaches three years back (the year-ago base of
#: the previous fiscal year) and one forward (a window's end), and Python's dates end at
#: years 1 and 9999; a wide margin inside those limits, so ``as_of`` never makes a 500.
AS_OF_MIN = -2208988800 * MICRO  # 1900-01-01T00:00:00Z
AS_OF_MAX = 221845392000 * MICRO  # 9000-01-01T00:00:00Z


def parse_as_of(text: str) -> int:
    """:func:`parse_instant`, limited to ``[AS_OF_MIN, AS_OF_MAX)``; ``ValueError`` otherwise."""
    micros = parse_instant(text)
    if not AS_OF_MIN <= micros < AS_OF_MAX:
        raise ValueError("as_of must be between 1900-01-01T00:00:00Z and 9000-01-01T00:00:00Z")
    return micros


def now_micros() -> int:
    return time.time_ns() // (1_000_000_000 // MICRO)
