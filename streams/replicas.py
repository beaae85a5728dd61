"""Replica shards: the KPI state of the partitions this worker holds as Faust *standbys*, so
that every worker can answer for the whole company.

Why: KPI state is sharded by partition, and a worker's own shards cover only the partitions it
owns; with two workers each ``/api/kpis`` answered about two thirds of the report right. The
report is built from cores (:func:`engine.report.build_report`), and only cores merge exactly
(sums of flows, stocks over customers, teams and reps seen), so a worker needs the cores of the
other partitions, not their reports. Faust already keeps a standby copy of the ledger table's
other partitions on each worker (``table_standby_replicas``, ``[worker] standby_replicas``),
read continuously from the changelog into the local store. A :class:`Replicas` turns those
records into shards, exactly as a rebuild does (:meth:`streams.ledger.Shard.restore`, a pure
function of the records), and keeps them current as records arrive:

- a plain ledger record (one apply round) is restored into the replica shard on arrival;
- a compaction (a key with ``|r``) or a tombstone changes which records are live
  (:func:`streams.ledger.live_keys`), so the partition's replica is rebuilt from the local store
  in the background (:meth:`Replicas.refresh`, with yields); the shard it replaces is served
  meanwhile (:attr:`Replicas.stand_in`), since retention changes no reported number;
- a new owner's fence that fences a record the replica holds (a zombie's round) makes it
  rebuild too, and *missing* until rebuilt; one that fences nothing changes nothing.

A replica is served only while it is *current*: it has applied its changelog partition up to
the end offset (high watermark) the partition had at the newest check at least
:data:`GRACE_SECONDS` old. The end offsets of the
standby changelog partitions are read in the background once a second
(:meth:`Replicas.update_ends`, one ``ListOffsets`` request through Faust's consumer), never per
request; a replica still reading its changelog (a worker that just joined, a slow broker) is
therefore *missing* instead of passing partial numbers off as the whole company's (seen: 3,768
of 11,396 messages answered with ``missing: []``). When the end offsets cannot be read (the
broker is away), the last ones read are kept: the owner cannot write past them meanwhile either.

Which partitions an answer covers, and which are *missing* (neither owned here nor replicated,
a replica not rebuilt yet, or one behind its changelog), is :meth:`Replicas.coverage`'s; the
views say so. Replica shards
never reach ``/metrics``: Prometheus sums the workers' exports, so each exports only its own.
Failover gains too: a worker that takes over a partition it replicated has its records locally.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Any

import orjson
from faust.types import TP

from engine.core import Core
from streams.fencing import Fence, fences_any, fences_of, is_fence, is_fenced
from streams.fencing import parse as parse_key
from streams.ledger import Shard, live_keys
from streams.tables import REBUILD_YIELD_EVERY, LedgerTable, PartitionCores, restore_shard

log = logging.getLogger(__name__)

#: How often dirty replicas are rebuilt and the changelog end offsets read (seconds).
REFRESH_SECONDS = 1.0
#: How long reading the end offsets may take before the last ones read are kept (seconds).
END_OFFSETS_TIMEOUT_SECONDS = 5.0
#: A replica is current once it has what its changelog held this long ago (seconds), judged
#: by the end offsets the background checks read (:meth:`Replicas.current`). Why not the last
#: check's: the end read at a check includes what the owner wrote a moment before, which the
#: replica reads a moment later. Under steady traffic that moment is milliseconds (measured: 0
#: of ~100 answers per worker missing at 400 messages a second, with either rule), but right
#: after a rebalance the replicas read more slowly, and every new owner writes a fence then
#: (:mod:`streams.fencing`): seen in CI, a worker answered 503 naming the partition just taken
#: over, right after the takeover, its replica one fence short. So a replica answers as of at
#: most this long before (plus one check), never with less than its changelog held then: the
#: order of an owner's own input latency. A time, not a number of checks: a timer that fell
#: behind (a busy event loop) runs its checks back to back. 0 is the strict rule
#: (``KPI_REPLICA_GRACE_SECONDS``, for comparison).
GRACE_SECONDS = float(os.environ.get("KPI_REPLICA_GRACE_SECONDS", "1.0"))
#: Checks in a row in which a replica is behind its end although the consumer has fetched up
#: to it, before its records are read again (:meth:`Replicas.reread_dropped`).
DROPPED_CHECKS = 3


class Replicas:
    """Shards of the standby partitions, kept current from the changelog records Faust reads."""

    def __init__(self, table: LedgerTable, cores: PartitionCores, partitions: int) -> None:
        self.table = table
        self.cores = cores
        self.partitions = partitions
        self.shards: dict[int, Shard] = {}
        #: standby partition -> its ledger records (key -> value), as the changelog has them
        self.records: dict[int, dict[bytes, bytes]] = {}
        self.dirty: set[int] = set()
        #: standby partition -> the changelog offset its records are read up to (exclusive)
        self.applied: dict[int, int] = {}
        #: changelog partition -> its end offset at the last check (:meth:`update_ends`)
        self.ends: dict[int, int] = {}
        #: (monotonic time, ends) of the checks that read them, oldest first: back to the
        #: newest one at least GRACE_SECONDS old
        self.ends_history: deque[tuple[float, dict[int, int]]] = deque()
        self.clock = time.monotonic
        #: partition -> since when its replica has been behind (for the log, :meth:`coverage`)
        self._behind_since: dict[int, float] = {}
        self._ends_failing = False
        #: partition being rebuilt -> plain records that arrived meanwhile (restored after it:
        #: restoring a record twice is harmless, Shard.restore)
        self._arrived: dict[int, list[bytes]] = {}
        self._restart: set[int] = set()  # a compaction arrived during the rebuild
        #: dirty partitions whose shard is served until the rebuild is done: only a
        #: compaction or its tombstones made them dirty, which change which records are live,
        #: not the numbers of a reported window (retention forgets only what lies before the
        #: oldest one, docs/decisions.md). Without it every replica of a partition was
        #: *missing* at each retention pass of its owner (hourly), for the rebuild's seconds.
        self.stand_in: set[int] = set()
        #: standby partition -> the fences among its records (streams.fencing)
        self.fences: dict[int, list[Fence]] = {}
        #: standby partition -> checks in a row it looked dropped (reread_dropped)
        self._dropped: dict[int, int] = {}
        table.on_changelog_record = self.take

    def standbys(self) -> set[int]:
        topic = self.table.changelog_topic_name
        return {tp.partition for tp in self.table.app.assignor.assigned_standbys()
                if tp.topic == topic}

    def take(self, event: Any) -> None:
        """A changelog record Faust's recovery just read (for an active or standby partition).

        The first record of a partition seeds its records from the local store: Faust reads a
        standby from where the store ends, and every later record passes here before it is
        stored (in batches).
        """
        message = event.message
        p = message.partition
        if p not in self.standbys():
            return
        records = self.records.get(p)
        if records is None:
            records = self.records[p] = dict(self.table.stored_items(p))
            self.fences[p] = fences_of(records)
            self.dirty.add(p)
        self.applied[p] = max(self.applied.get(p, 0), message.offset + 1)
        key, value = message.key, message.value
        if value is None:
            records.pop(key, None)
        else:
            records[key] = value
        fence = value is not None and is_fence(key)
        if fence:
            new = fences_of((key,))
            self.fences.setdefault(p, []).extend(new)
            if not fences_any(records, new):
                # Every new owner writes one: it fences nothing the replica holds (no zombie
                # wrote past it), so the shard stays as it is and is served on. Rebuilding it
                # made the partition *missing* for a second on every worker after each
                # takeover (seen: a 503 right after a takeover, "rebuilding").
                return
        elif value is not None:
            _, offset, epoch = parse_key(key)
            if is_fenced(epoch, offset, self.fences.get(p, ())):
                self.table.fenced.note((key,))
                return  # a zombie's record: read by nobody (streams.fencing)
        reshaped = value is None or fence or b"|r" in key
        shard = self.shards.get(p)
        if reshaped:
            if fence or shard is None:
                self.stand_in.discard(p)  # it holds a zombie's round: not served
            elif p not in self.dirty:
                self.stand_in.add(p)
        if p in self._arrived:
            if reshaped:
                self._restart.add(p)
            else:
                self._arrived[p].append(value)
                self._follow_stand_in(p, shard, value)
            return
        if shard is None or p in self.dirty or reshaped:
            self.dirty.add(p)
            if not reshaped:
                self._follow_stand_in(p, shard, value)
            return
        if not self._restore(p, shard, value):
            self.dirty.add(p)  # a record it cannot read: rebuild instead

    def _follow_stand_in(self, p: int, shard: Shard | None, value: bytes) -> None:
        """A plain record of a partition whose shard stands in while it is rebuilt: the
        stand-in takes it too, so that it stays current."""
        if p in self.stand_in and shard is not None:
            self._restore(p, shard, value)

    def _restore(self, p: int, shard: Shard, value: bytes) -> bool:
        """Restore one plain record into ``shard``; False (and no stand-in) if it cannot."""
        try:
            shard.restore(orjson.loads(value))
        except Exception:
            log.exception("replica of partition %d: cannot restore a record", p)
            self.stand_in.discard(p)
            return False
        return True

    async def refresh(self) -> None:
        """Drop replicas of partitions no longer standby here; rebuild the dirty ones."""
        standbys = self.standbys()
        for p in [p for p in self.records if p not in standbys]:
            self.records.pop(p, None)
            self.fences.pop(p, None)
            self._dropped.pop(p, None)
            self.shards.pop(p, None)
            self.stand_in.discard(p)
            self.applied.pop(p, None)
            self._forget_ends({p})
        for p in sorted(standbys - set(self.records)):
            # Nothing read for it yet: the local store holds it up to where Faust reads on
            # (e.g. a partition this worker owned before), and later records pass take().
            self.records[p] = dict(self.table.stored_items(p))
            self.fences[p] = fences_of(self.records[p])
            self.applied[p] = self._stored_upto(p)
            self.dirty.add(p)
        self.dirty &= set(self.records)
        for p in sorted(self.dirty):
            self._arrived[p] = []
            self._restart.discard(p)
            try:
                shard = await self._rebuild(p)
                if shard is None or p in self._restart:
                    continue  # the next refresh tries again
                for value in self._arrived[p]:
                    shard.restore(orjson.loads(value))
            finally:
                self._arrived.pop(p, None)
            self.shards[p] = shard
            self.dirty.discard(p)
            self.stand_in.discard(p)
            log.info("replica of partition %d rebuilt", p)

    def _forget_ends(self, partitions: set[int]) -> None:
        """Partitions no longer standby here: a later standby period starts from its own
        first check (another worker may have written meanwhile)."""
        for ends in (self.ends, *(ends for _, ends in self.ends_history)):
            for p in partitions:
                ends.pop(p, None)

    def _stored_upto(self, p: int) -> int:
        """The changelog offset the local store holds partition ``p`` up to (exclusive)."""
        persisted = self.table.persisted_offset(TP(self.table.changelog_topic_name, p))
        return 0 if persisted is None else persisted + 1

    async def update_ends(self) -> None:
        """Read the end offsets of the standby changelog partitions (kept if that fails)."""
        topic = self.table.changelog_topic_name
        standbys = self.standbys()
        self._forget_ends(set(self.ends) - standbys)
        tps = [TP(topic, p) for p in sorted(standbys)]
        if not tps:
            return
        try:
            ends = await asyncio.wait_for(self.table.app.consumer.highwaters(*tps),
                                          END_OFFSETS_TIMEOUT_SECONDS)
        except Exception as exc:  # broker away, consumer restarting: keep the last ones
            if not self._ends_failing:
                log.warning("cannot read the end offsets of the standby changelog partitions "
                            "(%r): replicas are judged against the last ones read until "
                            "they can be read again", exc)
            self._ends_failing = True
            return
        if self._ends_failing:
            log.info("end offsets of the standby changelog partitions read again")
        self._ends_failing = False
        for tp, end in ends.items():
            if end is not None and end >= 0:
                self.ends[tp.partition] = end
        now = self.clock()
        self.ends_history.append((now, dict(self.ends)))
        while len(self.ends_history) > 1 and self.ends_history[1][0] <= now - GRACE_SECONDS:
            self.ends_history.popleft()  # the next one is old enough to judge by
        await self.reread_dropped(standbys)

    async def reread_dropped(self, standbys: set[int]) -> None:
        """Read a standby partition again from the first record its replica lacks when the
        consumer has fetched up to the partition's end and the replica still lacks records,
        :data:`DROPPED_CHECKS` checks in a row.

        Why: Faust can drop standby records it fetched (its changelog queue is cleared when
        its flow resumes, :mod:`streams.standby_flow`; records of a paused partition taken
        from the client while no partition was active, :mod:`streams.paused_fetch`; both
        fixed, this is the net for a path not known yet), and seeks standby partitions only
        when the next recovery starts. The replica then stays behind, *missing*, until the
        owner writes again (at the end of a stream, for good). Reading again is harmless: a
        record at an offset never changes, and the store and the replica take it again as
        they took it first.
        """
        consumer = self.table.app.consumer
        topic = self.table.changelog_topic_name
        for p in sorted(standbys):
            end = self.ends.get(p)
            applied = self.applied.get(p)
            if end is None or applied is None or applied >= end:
                self._dropped.pop(p, None)
                continue
            tp = TP(topic, p)
            try:
                position = await asyncio.wait_for(consumer.position(tp),
                                                  END_OFFSETS_TIMEOUT_SECONDS)
            except Exception:  # a rebalance, the broker away: the next check tries again
                self._dropped.pop(p, None)
                continue
            if position is None or position < end:
                self._dropped.pop(p, None)  # still fetching
                continue
            checks = self._dropped[p] = self._dropped.get(p, 0) + 1
            if checks < DROPPED_CHECKS:
                continue
            self._dropped.pop(p, None)
            log.warning("replica of partition %d: its records from offset %d were fetched "
                        "(up to %d) but never reached it; reading them again", p, applied,
                        position)
            # Faust's recovery skips offsets up to the last it applied for the partition; if it
            # did apply them (the replica did not get them), it must take them again
            offsets = self.table.app.tables.recovery.standby_offsets
            if tp in offsets and offsets[tp] is not None and offsets[tp] >= applied:
                offsets[tp] = applied - 1
            try:
                await consumer.seek(tp, applied)
            except Exception:  # not assigned any more: the next recovery seeks it anyway
                log.exception("replica of partition %d: cannot read it again", p)

    def current(self, p: int) -> bool:
        """Whether the replica of ``p`` has applied its changelog up to the end read at the
        newest check at least :data:`GRACE_SECONDS` ago (a partition with no check that old:
        its first check's end; no check since the broker went away: the last end read)."""
        return p in self.ends and self.applied.get(p, -1) >= self._judged_end(p)

    def _judged_end(self, p: int) -> int:
        then = self.clock() - GRACE_SECONDS
        end = None
        for at, ends in self.ends_history:
            if p not in ends:
                continue
            if end is None or at <= then:
                end = ends[p]
            else:
                break
        return self.ends[p] if end is None else end

    async def _rebuild(self, p: int) -> Shard | None:
        records = self.records.get(p)
        if records is None:
            return None
        snapshot = sorted(records.items())  # ledger keys sort in write order
        fenced: list[bytes] = []
        live = live_keys((key for key, _ in snapshot), fenced)
        self.table.fenced.note(fenced)
        shard = self.cores.new_shard()
        since_yield = 0
        for record in snapshot:
            if record[0] not in live:
                continue
            since_yield += restore_shard(shard, iter((record,)))
            if since_yield >= REBUILD_YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)
                if p not in self.records or p in self._restart:
                    return None
        return shard

    def coverage(self) -> tuple[list[tuple[int, Shard]], list[int]]:
        """``([(partition, shard)] served here, missing partitions)``: own shards while ready,
        then the replicas of the others that are rebuilt and current (:meth:`current`)."""
        served: dict[int, Shard] = {}
        if self.cores.ready:
            for p in self.cores.partitions():
                shard = self.cores.get(p)
                if shard is not None:
                    served[p] = shard
        for p, shard in self.shards.items():
            if p not in served and (p not in self.dirty or p in self.stand_in) \
                    and self.current(p):
                served[p] = shard
        missing = [p for p in range(self.partitions) if p not in served]
        self._note_behind(missing)
        return sorted(served.items()), missing

    def _note_behind(self, missing: list[int]) -> None:
        """Log when a built replica starts being missing, and when it is served again: an
        operator sees which partition a worker refuses to answer for, and for how long."""
        now = self.clock()
        for p in missing:
            if p in self.shards and p not in self._behind_since:
                self._behind_since[p] = now
                log.info("replica of partition %d is behind its changelog (%s, has up to "
                         "offset %s, the end judged by is %s, the last read %s): partition "
                         "missing from answers", p, "rebuilding" if p in self.dirty else
                         "built", self.applied.get(p), self._judged_end(p)
                         if p in self.ends else None, self.ends.get(p))
        for p in [p for p in self._behind_since if p not in missing]:
            log.info("replica of partition %d served again after %.2f s", p,
                     now - self._behind_since.pop(p))


def cores_and_counts(served: list[tuple[int, Shard]]) -> tuple[list[Core], dict[str, int]]:
    """The cores of ``served`` shards and their durable duplicate and invalid totals."""
    duplicate = invalid = 0
    for _, shard in served:
        counts = shard.counts()
        duplicate += counts["duplicate"]
        invalid += counts["invalid"]
    return [shard.core for _, shard in served], {"duplicate": duplicate, "invalid": invalid}
