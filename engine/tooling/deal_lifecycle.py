"""How a synthetic deal moves through the configured pipeline stages before it closes (SPEC §7).

Why plan a deal's whole CRM history when it is created: the traffic model already knows when
the deal will close and whether it will be won, and a plausible CRM record follows from that.
Won deals climb to the late stages, lost deals mostly stall early; reps enter close dates that
are optimistic and push them out (a *slip*) once they have passed or when they see it coming,
and pull them in when a deal speeds up; amounts get renegotiated; a few deals change hands. The
plan is a list of timed :class:`Change` records; :mod:`engine.tooling.generator` turns each
into one ``deal.updated`` when its time comes, so a change planned after the end of a history
never happens and that deal is still open at the end (a living pipeline).

Every change of a plan lies strictly between the deal's creation and its close, at distinct
instants, so the engine's (``occurred_at``, ``event_id``) order of the lifecycle is the order
in which the model meant it. Re-opens (a ``deal.updated`` after a close) are planned when the
close happens, by :func:`plan_reopen`.

Only the model's own RNG is used (one that the v1 traffic never draws from), so the same seed
gives the same plan.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Change", "DealPlan", "plan_deal", "plan_reopen"]

DAY_S = 86_400

# Where a new deal enters the pipeline: mostly the first stage, some (referrals, known accounts)
# a step or two later.
FIRST_STAGE_WEIGHTS = (0.6, 0.3, 0.1)
STAGE_SKIP_RATE = 0.55          # a move that jumps over one stage (reps update in batches)
STAGE_BACK_RATE = 0.04          # after a forward move: back one stage, forward again later
LOST_STALL_DECAY = 0.45         # lost deals die in stage i with weight decay**i
LOST_STEP_BACK_RATE = 0.08      # a lost deal's last move is a step back before it dies
WON_LAST_STAGES = (0.5, 0.35, 0.15)  # won deals close from the last stage, or one or two before
AMOUNT_CHANGE_COUNTS = (0.78, 0.18, 0.04)  # 0, 1, 2 renegotiations
AMOUNT_ON_STAGE_MOVE_RATE = 0.35  # a renegotiation recorded together with a stage move
AMOUNT_SIGMA = 0.22             # log-normal spread of a renegotiation
MIN_AMOUNT = 500.0
FIRST_DATE_FACTOR = (0.75, 1.4)  # the first close date, as a share of the real cycle
SLIP_AFTER_PASSING_RATE = 0.7    # a slip is entered after the old date passed (else before)
SLIP_REMAINING_FACTOR = (0.9, 1.6)
MAX_SLIPS = 2
PULL_IN_RATE = 0.2               # a deal closing well before its date gets it pulled in
DATE_ON_STAGE_MOVE_RATE = 0.25   # a stage move also restates the close date
FULL_RECORD_RATE = 0.1           # an update that sends the whole record (some CRMs do)
OWNER_CHANGE_RATE = 0.05         # of deals: handed to another rep while open
OTHER_TEAM_RATE = 0.25           # of owner changes: to a rep of another team
REOPEN_DAYS = (1.0, 25.0)        # after the close
RECLOSE_DAYS = (5.0, 40.0)       # after the re-open


class Calendar(Protocol):
    """Local days of the configured zone (the generator's clock)."""

    def day_of(self, ts: float) -> int: ...

    def midnight(self, day: int) -> int: ...


@dataclass(slots=True)
class Change:
    """What one ``deal.updated`` sets (``None`` / ``False``: not carried).

    ``stage`` is an index into the configured stages. ``with_stage`` and ``with_close_date``
    restate the deal's current values (a CRM that sends more than what changed), ``full``
    sends the whole record: stage, amount, close date, team and rep.
    """

    stage: int | None = None
    amount_factor: float | None = None
    fill_amount: bool = False        # the amount that the deal.created lacked
    close_day: int | None = None     # local day ordinal of the new expected close
    owner_move: str | None = None    # "team": a teammate takes over; "other": another team
    with_stage: bool = False
    with_close_date: bool = False
    full: bool = False


@dataclass(slots=True)
class DealPlan:
    """The deal's stage and close date at creation (``None``: not on the ``deal.created``)
    and its updates until the close, as ``(instant, change)`` in time order."""

    stage: int | None
    close_day: int | None
    changes: list[tuple[int, Change]] = field(default_factory=list)


def plan_deal(rng: random.Random, stages: int, created: int, close: int, won: bool,
              calendar: Calendar, office: Callable[[int], int], *, stage_on_create: bool = True,
              date_on_create: bool = True, amount_on_create: bool = True) -> DealPlan:
    """The CRM history of a deal created at ``created`` that closes at ``close`` (``won``).

    ``office(ts)`` moves an instant into office hours of a working day (the model's habit);
    the ``*_on_create`` flags say what the ``deal.created`` carries, the rest is filled in by
    an early update.
    """
    span = close - created
    first = _weighted_index(rng, FIRST_STAGE_WEIGHTS[:stages])
    last = _last_stage(rng, stages, first, won)
    moves = _stage_moves(rng, first, last, won)
    timed: list[tuple[float, Change]] = []
    fractions = sorted(rng.uniform(0.05, 0.95) for _ in moves)
    stage_changes = []
    for fraction, stage in zip(fractions, moves):
        change = Change(stage=stage, with_close_date=rng.random() < DATE_ON_STAGE_MOVE_RATE,
                        full=rng.random() < FULL_RECORD_RATE)
        stage_changes.append(change)
        timed.append((created + fraction * span, change))

    opening = Change()
    if not stage_on_create:
        opening.stage = first
    if not amount_on_create:
        opening.fill_amount = True
    opened_by = created + rng.uniform(0.01, 0.05) * span
    close_day = calendar.day_of(close)
    cycle_days = span / DAY_S
    first_day = day = calendar.day_of(created) + max(1, round(cycle_days
                                                              * rng.uniform(*FIRST_DATE_FACTOR)))
    if not date_on_create:
        opening.close_day = first_day
    if opening != Change():
        timed.append((opened_by, opening))

    last_slip = opened_by
    for _ in range(MAX_SLIPS):
        if day >= close_day:
            break
        if rng.random() < SLIP_AFTER_PASSING_RATE:
            at = calendar.midnight(day) + rng.uniform(0.3, 5.0) * DAY_S
        else:
            at = calendar.midnight(day) - rng.uniform(0.5, 10.0) * DAY_S
        at = max(at, last_slip + 3600)
        if at >= close:
            break  # the deal closes before anyone moves the date
        remaining_days = (close - at) / DAY_S
        day = calendar.day_of(at) + max(1, round(remaining_days
                                                 * rng.uniform(*SLIP_REMAINING_FACTOR)))
        timed.append((at, Change(close_day=day, with_stage=rng.random() < 0.25)))
        last_slip = at
    if day > close_day + 7 and rng.random() < PULL_IN_RATE:
        at = close - rng.uniform(0.1, 0.5) * min(span, 14 * DAY_S)
        if at > last_slip:
            timed.append((at, Change(close_day=close_day + rng.randrange(0, 3))))

    for _ in range(_weighted_index(rng, AMOUNT_CHANGE_COUNTS)):
        factor = rng.lognormvariate(0.0, AMOUNT_SIGMA)
        if stage_changes and rng.random() < AMOUNT_ON_STAGE_MOVE_RATE:
            rng.choice(stage_changes).amount_factor = factor
        else:
            timed.append((created + rng.uniform(0.1, 0.9) * span, Change(amount_factor=factor)))
    if rng.random() < OWNER_CHANGE_RATE:
        move = "other" if rng.random() < OTHER_TEAM_RATE else "team"
        timed.append((created + rng.uniform(0.1, 0.9) * span, Change(owner_move=move)))

    return DealPlan(first if stage_on_create else None, first_day if date_on_create else None,
                    _schedule(timed, created, close, office))


def plan_reopen(rng: random.Random, stages: int, stage: int | None, won: bool, closed: int,
                calendar: Calendar, office: Callable[[int], int]) -> tuple[int, Change, int]:
    """A re-open after the close at ``closed``: ``(when, change, when it closes again)``.

    A won deal that falls through or is renegotiated goes back to the stage before the last;
    a lost deal is revived where it stalled, or a stage earlier. The update always carries a
    stage (that makes it a re-open with an entry, SPEC §7.3) and a new close date.
    """
    if stage is None:
        stage = 0
    if won:
        stage = max(0, stages - 2) if rng.random() < 0.7 else stage
    elif rng.random() < 0.4:
        stage = max(0, stage - 1)
    at = office(closed + int(rng.uniform(*REOPEN_DAYS) * DAY_S))
    if at <= closed:
        at = closed + 1
    reclose = office(at + int(rng.uniform(*RECLOSE_DAYS) * DAY_S))
    if reclose <= at:
        reclose = at + 1
    change = Change(stage=stage, close_day=calendar.day_of(reclose) + rng.randrange(0, 8),
                    amount_factor=rng.lognormvariate(0.0, AMOUNT_SIGMA)
                    if rng.random() < 0.3 else None)
    return at, change, reclose


def _weighted_index(rng: random.Random, weights: tuple[float, ...]) -> int:
    draw = rng.random() * sum(weights)
    for index, weight in enumerate(weights):
        draw -= weight
        if draw < 0:
            return index
    return len(weights) - 1


def _last_stage(rng: random.Random, stages: int, first: int, won: bool) -> int:
    """The stage a deal is in when it closes (before any step back)."""
    if won:
        last = stages - 1 - _weighted_index(rng, WON_LAST_STAGES)
    else:
        last = _weighted_index(rng, tuple(LOST_STALL_DECAY ** i for i in range(stages)))
    return max(first, last, 0)


def _stage_moves(rng: random.Random, first: int, last: int, won: bool) -> list[int]:
    """The stages after each move from ``first`` to ``last``: forward, sometimes skipping one,
    sometimes one back and forward again; a lost deal may end one stage back."""
    moves: list[int] = []
    stage = first
    while stage < last:
        stage += 2 if last - stage >= 2 and rng.random() < STAGE_SKIP_RATE else 1
        moves.append(stage)
        if stage < last and rng.random() < STAGE_BACK_RATE:
            moves += [stage - 1, stage]
    if not won and last > 0 and rng.random() < LOST_STEP_BACK_RATE:
        moves.append(last - 1)
    return moves


def _schedule(timed: list[tuple[float, Change]], created: int, close: int,
              office: Callable[[int], int]) -> list[tuple[int, Change]]:
    """Changes at distinct whole seconds strictly between ``created`` and ``close``, in the
    planned order: office hours where they fit, the planned instant otherwise."""
    timed.sort(key=lambda item: item[0])
    out: list[tuple[int, Change]] = []
    previous = created
    for planned, change in timed:
        at = office(int(planned))
        if not previous < at < close:
            at = int(planned)
        at = max(at, previous + 1)
        if at >= close:
            break  # no room left before the close (a deal of a day or two)
        out.append((at, change))
        previous = at
    return out
