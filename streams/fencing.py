"""Fencing a zombie owner's ledger writes: every ledger key names its writer's *epoch*.

Why: a worker paused past its session timeout (``SIGSTOP``, a long GC or swap stall) and then
resumed is a *zombie*: until its next rebalance it still believes it owns its partitions and
writes apply rounds (and retention compactions) to their ledger, while the partition's new
owner writes too. Markers written twice are already counted once (:meth:`streams.ledger.Shard.
restore`), but the zombie's rounds are still read as if they were the owner's, and a zombie
round could carry a verdict the owner's round for the same bundles does not share.

The rule (an epoch check; Kafka transactions would need one transactional producer per
changelog partition):

- a worker that takes over a partition (every rebuild of a partition's shard, see
  :meth:`streams.tables.LedgerTable._rebuild_shards`) picks the partition's next epoch, one
  above the highest in its ledger, and writes a *fence* record, key
  ``p|<from>|f<epoch>``, before its first round: ``from`` is the bundle offset it resumes at
  (every bundle before it is in the live ledger it read). Its records then carry the epoch
  in their keys: ``p|<offset>|e<epoch>``, compactions ``p|<upto>|r<h>|<i>|<n>|e<epoch>``.
  Keys without an epoch (ledgers written before fencing) have epoch 0;
- a record is *fenced* when some fence has a higher epoch and the record covers a bundle at
  or after that fence's ``from`` (its key offset ``>= from``): it was written by an older
  owner for bundles the newer owner answers for. Every reader skips it: the rebuild, the
  replicas, the retention pass (which deletes it with the records it replaces). The rule
  depends on keys only, not on the order in which records are read, so it holds in the local
  store (key order) and in the changelog (offset order) alike; and since a zombie's keys
  carry its own epoch, they never overwrite the owner's records in the compacted changelog;
- the older owner's records from before the takeover have key offsets below ``from`` and stay
  live; so does everything a fence never covered.

The zombie learns of the fence on its next rebalance: the recovery reads the fence (and the
new owner's records) for a partition whose shard it holds, which marks the shard stale
(:meth:`streams.tables.LedgerTable.on_changelog_event`); it is rebuilt from the ledger, fenced
records excluded, and its writing resumes only under a new fence with a higher epoch, or the
partition is gone. Between its resumption and that rebalance its writes reach the changelog
but are fenced for every reader.

Nothing here does I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

#: A fence: ``(epoch, from)``. Records of a lower epoch covering bundles ``>= from`` are fenced.
Fence = tuple[int, int]


def fence_key(partition: int, from_offset: int, epoch: int) -> bytes:
    """The key of the fence record written by the owner of ``epoch``."""
    return b"%d|%020d|f%d" % (partition, from_offset, epoch)


def fence_value(from_offset: int, epoch: int) -> bytes:
    """The fence record's value (informational: the key says it all)."""
    return b'{"epoch":%d,"from":%d}' % (epoch, from_offset)


def is_fence(key: bytes) -> bool:
    fields = key.split(b"|")
    return len(fields) == 3 and fields[2][:1] == b"f"


def parse(key: bytes) -> tuple[str, int, int]:
    """``(kind, offset, epoch)`` of a ledger key; kind is ``plain``, ``compacted`` or
    ``fence``; offset is the bundle offset the key covers up to (a fence: its ``from``)."""
    fields = key.split(b"|")
    offset = int(fields[1])
    n = len(fields)
    if n == 2:
        return "plain", offset, 0
    if n == 3:
        tag = fields[2][:1]
        if tag == b"e":
            return "plain", offset, int(fields[2][1:])
        if tag == b"f":
            return "fence", offset, int(fields[2][1:])
    elif n == 5:
        return "compacted", offset, 0
    elif n == 6 and fields[5][:1] == b"e":
        return "compacted", offset, int(fields[5][1:])
    raise ValueError(f"not a ledger key: {key!r}")


def key_epoch(key: bytes) -> int:
    return parse(key)[2]


def fences_of(keys: Iterable[bytes]) -> list[Fence]:
    """The fences among ``keys``."""
    found = []
    for key in keys:
        if is_fence(key):
            _, offset, epoch = parse(key)
            found.append((epoch, offset))
    return found


def is_fenced(epoch: int, offset: int, fences: Iterable[Fence]) -> bool:
    """Whether a record of ``epoch`` covering bundles up to ``offset`` is fenced."""
    return any(fence_epoch > epoch and offset >= start for fence_epoch, start in fences)


def fences_any(keys: Iterable[bytes], fences: list[Fence]) -> bool:
    """Whether ``fences`` fence any record among ``keys`` (fence records aside): if none, a
    restore with them reads exactly the records it read without them."""
    for key in keys:
        kind, offset, epoch = parse(key)
        if kind != "fence" and is_fenced(epoch, offset, fences):
            return True
    return False


def next_epoch(keys: Iterable[bytes]) -> int:
    """The epoch a new owner takes: one above every epoch in the partition's ledger."""
    return max((key_epoch(key) for key in keys), default=0) + 1


class FencedRecords:
    """Fenced records seen by this worker: each logged and counted once
    (``kpi_ledger_fenced_records_total``), whichever reader met it first."""

    def __init__(self, count: Callable[[int], None] | None = None) -> None:
        self.count = count
        self.seen: set[bytes] = set()

    def note(self, keys: Iterable[bytes]) -> int:
        """Note fenced ``keys``; the number not seen before."""
        new = [key for key in keys if key not in self.seen]
        if not new:
            return 0
        self.seen.update(new)
        log.warning("ignoring %d ledger record(s) written by an older owner after a newer one "
                    "took the partition over (a zombie, paused past its session?): %s",
                    len(new), b", ".join(sorted(new)[:5]).decode(errors="replace"))
        if self.count is not None:
            self.count(len(new))
        return len(new)
