"""A deal's lifecycle (SPEC §7.3): its created, updated and closed events in order, what the
deal looks like after each, and the stage entries and stay ends each one makes.

Why a walk over the whole ordered list: every pipeline fact at an event depends only on the
events up to it in (``occurred_at``, ``event_id``) order — a property is the latest value set,
an entry depends on the stage before, a stay ends where the next entry or close is. Keeping the
ordered steps and the state after each makes the rules order-independent: a late event is
inserted where it belongs and the walk is redone from there, so the result is the one a
from-scratch walk over the same set gives. Stage flows never depend on later events, so they
are the same whatever ``as_of`` a report is asked for.

Stages are held as their index in the configured list (``-1``: no stage), which is what the
measure vectors and the report are keyed by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CREATED: Final = 0
UPDATED: Final = 1
CLOSED: Final = 2
NO_STAGE: Final = -1


@dataclass(slots=True, init=False)
class Step:
    """One lifecycle event: what it sets (``None`` / ``NO_STAGE``: it does not set it)."""

    ts: int
    event_id: str
    kind: int
    stage: int
    amount: int | None
    expected_close: int | None
    team: str | None
    rep: str | None

    def __init__(self, ts: int, event_id: str, kind: int, stage: int, amount: int | None,
                 expected_close: int | None, team: str | None, rep: str | None) -> None:
        self.ts = ts
        self.event_id = event_id
        self.kind = kind
        self.stage = stage
        self.amount = amount
        self.expected_close = expected_close
        self.team = team
        self.rep = rep

    def before(self, other: Step) -> bool:
        """SPEC decision 16: (occurred_at, event_id) order, whatever the type."""
        return self.ts < other.ts or (self.ts == other.ts and self.event_id < other.event_id)


@dataclass(slots=True, init=False)
class DealState:
    """The deal after a step: its properties, whether it is open, and since when it has been
    in its current stage (``entered``, µs; meaningful while open with a stage)."""

    open: bool
    stage: int
    amount: int | None
    expected_close: int | None
    team: str | None
    rep: str | None
    entered: int

    def __init__(self, open: bool, stage: int, amount: int | None, expected_close: int | None,
                 team: str | None, rep: str | None, entered: int) -> None:
        self.open = open
        self.stage = stage
        self.amount = amount
        self.expected_close = expected_close
        self.team = team
        self.rep = rep
        self.entered = entered


@dataclass(slots=True, init=False)
class StageFlow:
    """What one step does to stage flows: an entry into ``entered`` and/or the end of a stay in
    ``ended`` that lasted ``stay`` µs (``NO_STAGE`` where none), for the scope after the step."""

    entered: int
    ended: int
    stay: int

    def __init__(self, entered: int, ended: int, stay: int) -> None:
        self.entered = entered
        self.ended = ended
        self.stay = stay


_INITIAL: Final = DealState(False, NO_STAGE, None, None, None, None, 0)


def advance(before: DealState | None, step: Step) -> tuple[DealState, StageFlow | None]:
    """The state after ``step`` given the state before it (``None``: no earlier step), and the
    step's stage flow, if it has one (SPEC §7.3 "stays in a stage", decisions 17–19)."""
    prev = before if before is not None else _INITIAL
    amount = step.amount if step.amount is not None else prev.amount
    team = step.team if step.team is not None else prev.team
    rep = step.rep if step.rep is not None else prev.rep
    if step.kind == CLOSED:
        flow: StageFlow | None = None
        if prev.open and prev.stage != NO_STAGE:
            flow = StageFlow(NO_STAGE, prev.stage, step.ts - prev.entered)
        # A close keeps the stage (a re-open returns to it, decision 19) and the close date.
        return DealState(False, prev.stage, amount, prev.expected_close, team, rep,
                         prev.entered), flow
    stage = step.stage if step.stage != NO_STAGE else prev.stage
    expected_close = (step.expected_close if step.expected_close is not None
                      else prev.expected_close)
    entered = prev.entered
    flow = None
    if stage != NO_STAGE and (not prev.open or stage != prev.stage):
        ended = prev.stage if prev.open else NO_STAGE
        flow = StageFlow(stage, ended, step.ts - prev.entered if ended != NO_STAGE else 0)
        entered = step.ts
    return DealState(True, stage, amount, expected_close, team, rep, entered), flow


def state_at(steps: list[Step], states: list[DealState], b: int) -> DealState | None:
    """The deal at instant ``b``: the state after the latest step with ``ts < b``, if any."""
    lo, hi = 0, len(steps)
    while lo < hi:
        mid = (lo + hi) // 2
        if steps[mid].ts < b:
            lo = mid + 1
        else:
            hi = mid
    return states[lo - 1] if lo > 0 else None
