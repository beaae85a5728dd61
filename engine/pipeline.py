"""Point-in-time pipeline figures (SPEC §7.4): the deals open at an instant, by stage and scope.

Why a pass over the deals at each instant rather than running sums: "open at t, with its
properties at t" is a question about one instant (a window's effective end), and a deal's
state at any instant is one binary search in its lifecycle (:mod:`engine.lifecycle`). The
answer is kept as exact integers — open deals, amount and due amount per stage, with the
deals that have no stage in a slot of their own — in an :class:`~engine.measures.Aggregate`
per window, so teams, reps, partitions and workers add up exactly; probabilities and
categories are applied at the very end (:func:`engine.kpis.pipeline_kpis`).
"""

from __future__ import annotations

from typing import Final

from engine.calendar import Window
from engine.core import Core
from engine.lifecycle import NO_STAGE, state_at
from engine.measures import Aggregate, Contribution

# Per stage slot (configured stages in order, then one for deals without a stage):
OPEN_DEALS: Final = 0
OPEN_AMOUNT: Final = 1
DUE_AMOUNT: Final = 2
SLOT: Final = 3


def pipeline_width(n_stages: int) -> int:
    return SLOT * (n_stages + 1)


def pipeline_for_windows(cores: list[Core], windows: list[Window], as_of: int,
                         n_stages: int) -> list[Aggregate]:
    """The pipeline of each window: open at ``eff_end(W)``, due in ``[start(W), end(W))``.

    Windows that share an effective end (all offset-0 windows: ``as_of``) share one pass.
    """
    by_instant: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_instant.setdefault(min(w.end, as_of), []).append(i)
    out: list[Aggregate] = [Aggregate(pipeline_width(n_stages)) for _ in windows]
    for t, indexes in by_instant.items():
        dues = [(windows[i].start, windows[i].end) for i in indexes]
        for i, agg in zip(indexes, pipeline_at(cores, t, dues, n_stages)):
            out[i] = agg
    return out


def pipeline_at(cores: list[Core], t: int, dues: list[tuple[int, int]],
                n_stages: int) -> list[Aggregate]:
    """One aggregate per due range ``[lo, hi)`` of the deals open at ``t`` (SPEC §7.3, §7.4).

    A deal counts for the company and for its ``team_id``/``rep_id`` properties at ``t``;
    a null amount counts 0, a null ``expected_close_at`` is never due (decision 21).
    """
    width = pipeline_width(n_stages)
    out = [Aggregate(width) for _ in dues]
    for core in cores:
        for deal in core.deals.values():
            steps = deal.steps
            # Cheap tests first: most deals were closed long before t, or begin after it.
            if not steps or steps[0].ts >= t:
                continue
            states = deal.states
            if not states[-1].open and steps[-1].ts < t:
                continue
            state = state_at(steps, states, t)
            if state is None or not state.open:
                continue
            base = SLOT * (state.stage if state.stage != NO_STAGE else n_stages)
            amount = state.amount if state.amount is not None else 0
            close = state.expected_close
            open_values: tuple[tuple[int, int], ...] = ((base + OPEN_DEALS, 1),
                                                        (base + OPEN_AMOUNT, amount))
            due_values = open_values + ((base + DUE_AMOUNT, amount),)
            for agg, (lo, hi) in zip(out, dues):
                due = close is not None and lo <= close < hi
                agg.add(Contribution(t, state.team, state.rep, False,
                                     due_values if due else open_values))
    return out
