"""The ``ledger`` table (durable, Faust-recovered) and the in-memory shard of each partition.

The table holds the ledger records of :mod:`streams.ledger`: per apply round and partition,
the entries that round produced. The :class:`~streams.ledger.Shard` of a partition (its KPI
core, the sources it has taken, its duplicate and invalid counts) is a pure function of that
partition's records, so it is never persisted: it is rebuilt from the stored records whenever
the partition is (re)assigned, once Faust's table recovery has caught up with the changelog.

Writes bypass ``table[key] = value`` (see :mod:`streams.apply`), but keep Faust's layout: the
record goes to changelog partition *p* with the table's raw key and value, and, once Kafka has
acknowledged it, into the local store of partition *p* together with its changelog offset (what
Faust's own write path stores as the partition's *persisted offset*). So Faust's recovery,
standby replicas and the fast restart from local RocksDB files work as for any table.

Which Faust hooks, and why they are reliable (faust-streaming 0.15.x, ``tables/recovery.py``):

- :meth:`LedgerTable.on_rebalance` runs for every rebalance while stream processing is already
  suspended. Shards of partitions that are no longer active here are dropped at once (a later
  reassignment must rebuild from the changelog, since another worker may have written to it),
  and the worker stops being ready.
- :meth:`LedgerTable.on_recovery_completed` is awaited by ``Recovery.on_recovery_completed``
  after the active changelog partitions have been read up to their high-water marks and
  *before* the stream partitions are resumed, so no bundle reaches the apply agent for a
  partition whose shard is not built yet. It is also called when nothing needed recovering.
  A rebalance that starts meanwhile is detected (the recovery start signal, and an epoch
  counter bumped by ``on_rebalance``), and the stale rebuild is abandoned; the next recovery
  round calls the hook again.
  Each partition rebuilt here is one this worker takes over: before its first round, the
  hook writes the partition's fence with the next epoch (:mod:`streams.fencing`), so that
  records an older owner writes from then on are ignored by every reader.

Iterating one partition: the RocksDB store keeps one database per partition, and Faust's own
iteration only covers active partitions; here one partition's database is read directly. The
in-memory store keeps a single dict that also holds standby data, so its keys are filtered by
the partition named in the ledger key (:func:`streams.ledger.ledger_partition`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import faust
import orjson
from faust.types import TP

from engine.calendar import Calendar
from engine.config import Config
from engine.core import Core
from streams.fencing import FencedRecords, fence_key, fence_value, next_epoch
from streams.heap import HeapKeeper
from streams.ledger import Shard, key_offset, ledger_partition, live_keys
from streams.resume import BundlePositions

log = logging.getLogger(__name__)

#: Rebuilding yields to the event loop every this many ledger entries (heartbeats, web requests).
REBUILD_YIELD_EVERY = 20_000


class PartitionCores:
    """One :class:`Shard` per active partition, plus the worker's readiness.

    Named for what the readers (the report, the collector, the wallboard) take from it: the
    KPI cores of the active partitions.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        #: One calendar for every shard of the worker: its local-day memo (one entry per
        #: 15-minute slot, two time-zone conversions to fill each) is then filled and held
        #: once, not once per partition (~0.2 CPU s and 70k entries each for two years).
        self.calendar = Calendar(config.calendar)
        self._shards: dict[int, Shard] = {}
        self.ready = False
        self.epoch = 0  # bumped by every rebalance; a rebuild from an older epoch is stale

    def __len__(self) -> int:
        return len(self._shards)

    def partitions(self) -> list[int]:
        return sorted(self._shards)

    def get(self, partition: int) -> Shard | None:
        return self._shards.get(partition)

    def active_cores(self) -> list[Core]:
        return [self._shards[p].core for p in sorted(self._shards)]

    def counts(self) -> dict[str, int]:
        """Durable ``duplicate`` and ``invalid`` totals of the active partitions (SPEC §5)."""
        duplicate = invalid = 0
        for shard in self._shards.values():
            counts = shard.counts()
            duplicate += counts["duplicate"]
            invalid += counts["invalid"]
        return {"duplicate": duplicate, "invalid": invalid}

    def begin_rebalance(self, keep: set[int]) -> None:
        """A rebalance started: not ready, and only the shards of ``keep`` survive."""
        self.epoch += 1
        self.ready = False
        self.retain(keep)

    def retain(self, keep: set[int]) -> None:
        for partition in [p for p in self._shards if p not in keep]:
            del self._shards[partition]

    def install(self, partition: int, shard: Shard) -> None:
        self._shards[partition] = shard

    def new_shard(self) -> Shard:
        return Shard(Core(self.calendar, self.config.pipeline))


#: How long the broker may hold a fetch of Faust's consumer waiting for data (Faust: 1500 ms).
FETCH_MAX_WAIT_MS = 100


def shorten_fetch_wait(app: faust.App, ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Let the broker answer Faust's fetches after ``ms`` instead of Faust's fixed 1.5 s.

    Why: aiokafka keeps one fetch in flight per broker and asks only for partitions it has
    no records buffered for. When some bundle partitions are drained and others are not
    (catching up on a backlog), the fetch for the drained ones waits the full 1.5 s for new
    data while the others' bundles wait behind it: measured, the apply agent sat idle for
    1.2-1.5 s several times per 600k-event load. There is no setting for it in Faust 0.15, so
    the live fetcher's attribute is set (read when each fetch request is built).
    """
    thread = getattr(app.consumer, "_thread", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
        fetcher._fetch_max_wait_ms = ms


def restore_shard(shard: Shard, records: Iterator[tuple[Any, bytes]]) -> int:
    """Re-apply every entry of the ledger ``records`` to ``shard``; return the entry count."""
    count = 0
    for _key, value in records:
        count += shard.restore(orjson.loads(value))
    return count


def ledger_end(keys: Iterator[bytes]) -> int:
    """The bundle offset after the newest ledger record of ``keys`` (0 for none): every bundle
    before it is in the ledger (:func:`streams.ledger.ledger_key`)."""
    return max((key_offset(key) + 1 for key in keys), default=0)


class LedgerTable(faust.Table):
    """The ``ledger`` table, with the rebuild hooks and direct access to the local store."""

    cores: PartitionCores
    unconfirmed_batches: int

    def __init__(self, app: faust.App, *, cores: PartitionCores, heap: HeapKeeper,
                 positions: BundlePositions, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.cores = cores
        self.heap = heap
        #: where the apply stage may resume each bundles partition (streams.resume)
        self.positions = positions
        self.unconfirmed_batches = 0  # ledger writes sent and not yet acknowledged
        #: told of every changelog record Faust reads (streams.replicas keeps standbys' shards)
        self.on_changelog_record: Any = None
        #: partitions whose shard another worker's writes made stale (on_changelog_event)
        self.stale: set[int] = set()
        #: partitions whose local store offset stopped at another worker's writes (logged once)
        self.gaps: set[int] = set()
        #: active partition -> the epoch this worker writes it with (streams.fencing)
        self.epochs: dict[int, int] = {}
        #: writes the fence of a partition taken over (the LedgerWriter; None: no fences)
        self.writer: Any = None
        #: fenced records met by any reader, logged and counted once
        self.fenced = FencedRecords()

    async def on_changelog_event(self, event: Any) -> None:
        """Every record Faust's recovery reads, as it is read (the store gets them in batches,
        later): the replicas of the standby partitions follow them.

        A record read for a partition whose shard this worker still holds was written by
        another worker: this one lost the partition meanwhile and got it back (a zombie, paused
        past its session timeout, whose assignment came back unchanged, so no partition was
        "revoked"). Its shard lacks what the other worker did, so it is rebuilt.
        """
        partition = event.message.partition
        if self.cores.get(partition) is not None:
            self.stale.add(partition)
        await super().on_changelog_event(event)
        if self.on_changelog_record is not None:
            try:
                self.on_changelog_record(event)
            except Exception:  # replicas are a convenience; recovery must not suffer
                log.exception("replica update failed")

    # -- the local store -----------------------------------------------------------------------

    def store_acknowledged(self, partition: int, key: bytes, value: bytes | None,
                           changelog_offset: int) -> None:
        """Put a record Kafka acknowledged at ``changelog_offset`` into the local store
        (``value`` ``None``: a tombstone, which deletes ``key``, as Faust's recovery does).

        The store's offset (where Faust's recovery and a standby replica read on from) moves
        only when the record directly follows the one it holds: a gap means another worker
        wrote to the partition meanwhile (this one was a zombie, paused past its session),
        and claiming the new offset would hide those records from every later recovery. The
        record itself is stored either way; reading it again from the changelog is harmless.
        """
        store = self.data
        if hasattr(store, "_db_for_partition"):
            db = store._db_for_partition(partition)
            if store.use_rocksdict:
                import rocksdict
                batch = rocksdict.WriteBatch(raw_mode=True)
            else:  # pragma: no cover (python-rocksdb is not installed here)
                import rocksdb
                batch = rocksdb.WriteBatch()
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            held = db.get(store.offset_key)
            if (int(held) + 1 if held is not None else 0) == changelog_offset:
                batch.put(store.offset_key, str(changelog_offset).encode())
            elif partition not in self.gaps:
                self.gaps.add(partition)
                log.warning("changelog partition %d: records before offset %d were written by "
                            "another worker; the local store keeps offset %s, so that the next "
                            "recovery reads them", partition, changelog_offset,
                            held.decode() if held is not None else "none")
            db.write(batch)
        elif value is None:
            store.data.pop(key, None)
        else:
            store.data[key] = value

    def live_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """The stored records a restore reads (:func:`streams.ledger.live_keys`): the keys are
        read first (without the values), then the records."""
        return self._live_items(partition, list(self.stored_keys(partition)))

    def _live_items(self, partition: int, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        fenced: list[bytes] = []
        live = live_keys(keys, fenced)
        self.fenced.note(fenced)
        return ((key, value) for key, value in self.stored_items(partition) if key in live)

    def stored_keys(self, partition: int) -> Iterator[bytes]:
        """Every key stored for ``partition``, straight from the local store."""
        store = self.data
        if hasattr(store, "_db_for_partition") and hasattr(store, "_visible_keys"):
            yield from store._visible_keys(store._db_for_partition(partition))
            return
        for key, value in list(store.data.items()):
            if value is not None and ledger_partition(key) == partition:
                yield key

    def stored_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` stored for ``partition``, straight from the local store."""
        store = self.data
        if hasattr(store, "_db_for_partition") and hasattr(store, "_visible_items"):
            yield from store._visible_items(store._db_for_partition(partition))
            return
        for key, value in list(store.data.items()):
            if value is not None and ledger_partition(key) == partition:
                yield key, value

    # -- partition lifecycle -------------------------------------------------------------------

    def _active_partitions(self) -> set[int]:
        topic = self.changelog_topic_name
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        shorten_fetch_wait(self.app)
        topic = self.changelog_topic_name
        revoked_partitions = {tp.partition for tp in revoked if tp.topic == topic}
        self.gaps.clear()  # the recovery that follows reads past them
        keep = self._active_partitions() - revoked_partitions
        self.cores.begin_rebalance(keep)
        self.epochs = {p: epoch for p, epoch in self.epochs.items() if p in keep}
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        try:
            await self._rebuild_shards({tp.partition for tp in active_tps})
        except Exception as exc:  # Faust runs this hook in a task whose errors nobody reads
            log.exception("rebuilding KPI state from the %s table failed", self.name)
            await self.app.crash(exc)

    def _recovery_restarting(self) -> bool:
        return self.app.tables.recovery.signal_recovery_start.is_set()

    async def _rebuild_shards(self, active: set[int]) -> None:
        cores = self.cores
        epoch = cores.epoch
        if self._recovery_restarting():
            return
        if self.stale:
            log.warning("partitions %s were written by another worker while this one held "
                        "them (paused past its session?): rebuilding their KPI state",
                        sorted(self.stale))
            active_kept = active - self.stale
            self.stale.clear()
            cores.retain(active_kept)
        cores.retain(active)
        for partition in sorted(active - set(cores.partitions())):
            started, cpu_started = time.monotonic(), time.thread_time()
            shard = cores.new_shard()
            count = since_yield = 0
            end = 0
            keys = list(self.stored_keys(partition))
            for record in self._live_items(partition, keys):
                end = max(end, key_offset(record[0]) + 1)
                entries = restore_shard(shard, iter((record,)))
                count += entries
                since_yield += entries
                if since_yield >= REBUILD_YIELD_EVERY:
                    since_yield = 0
                    await asyncio.sleep(0)
                    if cores.epoch != epoch or self._recovery_restarting():
                        log.info("rebalance during rebuild of partition %d; will rebuild again",
                                 partition)
                        return
            owner_epoch = next_epoch(keys)
            if self.writer is not None:
                # before the first round: from here on, an older owner's records for bundles
                # from ``end`` on are fenced (streams.fencing)
                await self.writer.write_partition(
                    partition, [(fence_key(partition, end, owner_epoch),
                                 fence_value(end, owner_epoch))])
                if cores.epoch != epoch or self._recovery_restarting():
                    log.info("rebalance while fencing partition %d; will rebuild again",
                             partition)
                    return
            self.epochs[partition] = owner_epoch
            cores.install(partition, shard)
            # where the live ledger ends, even below this worker's own earlier point: records
            # it wrote as a zombie are fenced, and their bundles must be read again
            self.positions.reset(partition, end)
            self.heap.freeze()
            # CPU seconds of this thread (the event loop's): on a busy machine the wall clock
            # says more about the neighbours than about the rebuild
            log.info("partition %d: KPI state rebuilt from %d ledger entries in %.2f s "
                     "(%.2f CPU s); writing it with epoch %d", partition, count,
                     time.monotonic() - started, time.thread_time() - cpu_started, owner_epoch)
        cores.ready = True

    def rebuild_partition_now(self, partition: int) -> Shard:
        """Synchronous rebuild, for a bundle of a partition without a shard (should not happen)."""
        log.warning("partition %d has no KPI state yet; rebuilding it synchronously", partition)
        shard = self.cores.new_shard()
        keys = list(self.stored_keys(partition))
        records = list(self._live_items(partition, keys))
        restore_shard(shard, iter(records))
        self.positions.reset(partition, ledger_end(key for key, _ in records))
        # no fence can be written synchronously: its records are not fenced by older owners'
        # rounds, but take precedence over them (a higher epoch)
        self.epochs[partition] = next_epoch(keys)
        self.cores.install(partition, shard)
        return shard
