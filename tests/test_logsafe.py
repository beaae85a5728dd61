"""Event content (personal data) stays out of the worker's log, also when applying it fails."""

from __future__ import annotations

import logging
from collections import Counter

from engine.calendar import Calendar
from engine.config import CalendarConfig
from engine.core import Core
from streams.ledger import Shard
from streams.logsafe import exception_summary

PERSONAL = "jane.doe@example.com"


def test_an_item_that_cannot_be_applied_is_logged_by_position_never_by_content(caplog) -> None:
    shard = Shard(Core(Calendar(CalendarConfig())))
    bad = ["k1", 0, ["e1", "deal.closed", 1, PERSONAL, PERSONAL, *([PERSONAL] * 15)], 3, 42]
    with caplog.at_level(logging.DEBUG):
        replays, errors = shard.take_bundle([bad], [], Counter(), Counter())
    assert errors == 1
    assert "3, 42" in caplog.text and "TypeError" in caplog.text
    assert PERSONAL not in caplog.text


def test_the_summary_names_type_and_place_but_not_the_message() -> None:
    try:
        {}[PERSONAL]
    except KeyError as exc:
        summary = exception_summary(exc)
    assert summary.startswith("KeyError at test_logsafe.py:")
    assert PERSONAL not in summary
