"""File replay: a ``.jsonl`` file through the same decoder and core as the live engine.

Why: the report over a file is the reference the live engine is checked against, so it must
not have a decoder or KPI logic of its own — only the reading loop lives here.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field

from engine.config import Config
from engine.core import Core
from engine.decode import decode
from engine.event import Rejection
from engine.jsonl import iter_lines


@dataclass(slots=True)
class Replay:
    """A core fed from a file, with the SPEC §5 counts and the invalid lines."""

    core: Core
    read: int = 0
    duplicate: int = 0
    invalid: int = 0
    errors: list[tuple[int, Rejection]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"read": self.read, "duplicate": self.duplicate, "invalid": self.invalid}


def replay_file(path: str | os.PathLike[str], config: Config, core: Core | None = None,
                keep_errors: int = 1000) -> Replay:
    """Decode every line of ``path`` and apply the valid events to ``core`` (a new one if None).

    Duplicates are decided in file order before the visibility check (SPEC §6.14); visibility
    itself is the report's business, so every valid event is applied.
    """
    result = Replay(core if core is not None else Core(config.calendar, config.pipeline))
    # The core's state is acyclic (dicts, tuples, slotted records), so the cyclic collector
    # only costs time here: with a million live objects its full passes take a third of the
    # load. Paused for the load, then the loaded state is frozen out of later collections.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _load(path, config, result, keep_errors)
    finally:
        if gc_was_enabled:
            gc.freeze()
            gc.enable()
    return result


def _load(path: str | os.PathLike[str], config: Config, result: Replay, keep_errors: int) -> None:
    apply = result.core.apply
    currency = config.money.currency
    max_bytes = config.limits.max_event_bytes
    stages = config.pipeline.stage_ids or None
    read = duplicate = invalid = 0
    errors = result.errors
    for line_no, raw in iter_lines(path):
        read += 1
        event = decode(raw, currency=currency, max_event_bytes=max_bytes, stages=stages)
        if isinstance(event, Rejection):
            invalid += 1
            if len(errors) < keep_errors:
                errors.append((line_no, event))
        elif not apply(event):
            duplicate += 1
    result.read, result.duplicate, result.invalid = read, duplicate, invalid
