"""Records of partitions Faust has paused are never taken from the client's buffer.

Why: Faust fetches by handing aiokafka its *live* set of active (unpaused) partitions
(``Consumer._wait_next_records``), and aiokafka's ``Fetcher.fetched_records(partitions)``
returns the buffered records of the partitions in that set, or of *every* assigned partition
when the set is empty (``if partitions and tp not in partitions``), moving their positions
past what it returns. Faust only calls it with a non-empty set, but the set is shared with the
consumer's thread and may empty while the call waits (up to a second) for records. Faust then
yields only the records of partitions that are in the set again (``Consumer.getmany``) and
silently drops the rest, their positions already moved past them.

That happens at every recovery that reads active partitions: the recovery pauses the active
changelog partitions when they are read (every other partition is paused since the rebalance,
so the set is empty), then seeks the standby changelog partitions to where their replicas
stand, which fetches them, and resumes them a few milliseconds later. The records fetched in
between are drained with the empty set and dropped, and Faust seeks standby partitions only at
the next recovery: the replica stays behind its changelog, *missing*, until the owner writes
again (at the end of a stream, for good). Seen, instrumented, in the zombie cluster test (a
standby's records 1..5 fetched with the partition not active, the flow never suspended, none
delivered) and in the fencing test (a joining worker's two replicas missing for minutes);
before, :meth:`streams.replicas.Replicas.reread_dropped` read them again after ~3 s.

The fix hands aiokafka a view of the same live set that is never empty to it: a partition is
fetched exactly while it is active, whether or not any other is. Bundles partitions were
drained the same way during a recovery; they were safe only because Faust seeks them back
to their committed offsets before the flow resumes (and :mod:`streams.resume`).
"""

from __future__ import annotations

from collections.abc import Iterator, Set
from typing import Any


class ActivePartitions:
    """Faust's live set of active partitions as aiokafka reads it: membership follows the set
    (read from the consumer's thread, as Faust's own set is), and it is never "no filter"."""

    __slots__ = ("_live",)

    def __init__(self, live: Set[Any]) -> None:
        self._live = live

    def __contains__(self, tp: object) -> bool:
        return tp in self._live

    def __bool__(self) -> bool:
        return True  # empty means "none", never aiokafka's "all"

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._live))  # a copy: the set changes in the other thread


def fetch_only_active_partitions(consumer: Any) -> None:
    """Make Faust's ``consumer`` fetch only the partitions in its active set, even when that
    set empties while a fetch waits (see the module docstring)."""
    getmany = consumer._getmany

    async def getmany_active_only(active_partitions: Set[Any] | None,
                                  timeout: float) -> Any:
        partitions: Any = active_partitions
        if active_partitions is not None:  # None: a client-only app, which fetches all
            partitions = ActivePartitions(active_partitions)
        return await getmany(active_partitions=partitions, timeout=timeout)

    consumer._getmany = getmany_active_only
