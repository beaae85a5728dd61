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


def now_micros() -> int:
    return time.time_ns() // (1_000_000_000 // MICRO)
