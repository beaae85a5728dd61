"""Garbage collection for a process whose heap is mostly KPI state that lives forever.

Why: the KPI cores are millions of small, acyclic objects (entities, contributions, event ids)
that live as long as their partition. CPython's cyclic collector walks all of them in every
full collection, and starts one whenever the heap has grown by a quarter. Measured while a
worker loaded 600k events: the collector took 6.6 of 14.4 CPU seconds, in pauses of up to
0.4 s. The objects that can form garbage cycles (futures, tasks, exceptions) are few and
short-lived in comparison.

So (as :mod:`engine.replay` does for a file, but for a process that never stops loading):

- the young generations are collected ~300 times less often (:data:`GEN0_THRESHOLD`);
- the state is moved out of the collector's sight with :func:`gc.freeze` every
  :data:`FREEZE_EVERY` ledger entries applied, and after each partition rebuild. The young
  generations are collected first, so only garbage cycles that were already old at that moment
  are frozen with the state: a handful of objects per freeze, and freezes are rare.
"""

from __future__ import annotations

import gc

#: Allocations (net) between young collections; CPython's default is 700.
GEN0_THRESHOLD = 200_000
#: Ledger entries applied between freezes (each is a dozen or so long-lived objects).
FREEZE_EVERY = 200_000


class HeapKeeper:
    """Counts what was added to the long-lived state and freezes it now and then."""

    def __init__(self) -> None:
        self.since_freeze = 0
        self.freezes = 0

    @staticmethod
    def configure() -> None:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)

    def grew(self, entries: int) -> None:
        self.since_freeze += entries
        if self.since_freeze >= FREEZE_EVERY:
            self.freeze()

    def freeze(self) -> None:
        self.since_freeze = 0
        self.freezes += 1
        gc.collect(1)
        gc.freeze()
