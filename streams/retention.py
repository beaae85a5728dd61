"""The retention pass: bound each partition's state and ledger by ``[limits] retention_days``.

Every :data:`RETENTION_INTERVAL_SECONDS` (a Faust timer, on the event loop that owns the
shards, :mod:`streams.worker`), for each active partition: the shard forgets what lies before
``now − retention_days`` (:meth:`streams.ledger.Shard.evict`), and the partition's ledger is
compacted (:func:`streams.ledger.compact`, decisions in :mod:`streams.ledger`): the new record
goes out through the ledger writer, the apply agent's path, so it reaches the changelog and the
local store alike, then tombstones for the records it replaces, the same way.

A partition whose eviction forgot nothing is left as it is (no compaction, no writes). The
eviction runs without an ``await``, so no apply round sees a shard half-evicted; the ledger is
then read and the new record built in steps (:class:`streams.ledger.Compaction`) that yield to
the event loop every :data:`BYTES_PER_STEP`, so the pass never holds the loop for long (it used
to read and parse a whole partition in one go). Which route keys are kept was fixed at the
eviction. An apply round may run between steps or while the writes are awaited; its record has
a higher bundle offset than any the compaction replaces, so it stays live (``live_keys``). A
rebalance meanwhile abandons the pass for that partition before its tombstones: the new owner
rebuilds from the changelog, in which the compaction is either complete or ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os

from engine.event import MICRO
from engine.timestamps import now_micros
from streams.apply import LEDGER_RECORD_MAX_BYTES, LedgerWriter
from streams.ledger import Compaction, live_keys
from streams.tables import LedgerTable, PartitionCores

log = logging.getLogger(__name__)

#: How often the retention pass runs (seconds); ``RETENTION_INTERVAL_SECONDS`` overrides it.
RETENTION_INTERVAL_SECONDS = float(os.environ.get("RETENTION_INTERVAL_SECONDS", "3600"))

_DAY_US = 86_400 * MICRO
#: Work between two yields to the event loop, so that apply rounds, heartbeats and web
#: requests go on during a pass over a partition with years of records: ledger keys listed,
#: and bytes of ledger records parsed (~1-2 ms of work).
KEYS_PER_STEP = 512
BYTES_PER_STEP = 256 * 1024


class Retention:
    """Evicts old state from the shards and compacts their ledger records."""

    def __init__(self, retention_days: int, cores: PartitionCores, table: LedgerTable,
                 writer: LedgerWriter) -> None:
        self.retention_days = retention_days
        self.cores = cores
        self.table = table
        self.writer = writer

    async def run(self, now_us: int | None = None) -> int:
        """One pass over the active partitions; the number of partitions compacted."""
        if not self.cores.ready:
            return 0
        horizon = (now_micros() if now_us is None else now_us) - self.retention_days * _DAY_US
        done = 0
        for partition in self.cores.partitions():
            try:
                done += await self.compact_partition(partition, horizon)
            except Exception:  # safe to leave: a half-written compaction is never read
                log.exception("partition %d: retention pass failed", partition)
        return done

    async def compact_partition(self, partition: int, horizon: int) -> bool:
        cores = self.cores
        epoch = cores.epoch
        shard = cores.get(partition)
        if shard is None:
            return False
        if not shard.evict(horizon):
            return False  # nothing forgotten: the ledger stays as it is
        compaction = Compaction(shard, partition, horizon, LEDGER_RECORD_MAX_BYTES,
                                self._epoch(partition))
        keys = []
        for i, (key, _value) in enumerate(self.table.stored_items(partition), 1):
            keys.append(key)
            if i % KEYS_PER_STEP == 0 and not await self._still(shard, partition, epoch):
                return False
        fenced: list[bytes] = []
        live = live_keys(keys, fenced)  # fenced records are deleted with the replaced ones
        self._note_fenced(fenced)
        known = set(keys)  # records written meanwhile stay as they are (and stay live)
        parsed = 0
        for key, value in self.table.stored_items(partition):
            if key not in known:
                continue
            compaction.feed(key, value, key in live)
            parsed += len(value)
            if parsed >= BYTES_PER_STEP:
                parsed = 0
                if not await self._still(shard, partition, epoch):
                    return False
        result = compaction.finish()
        if result is None:
            return False
        parts, old = result
        await self.writer.write_partition(partition, parts)
        if cores.epoch != epoch or cores.get(partition) is not shard:
            log.info("partition %d: rebalance during compaction; its old records stay", partition)
            return False
        await self.writer.write_partition(partition, [(key, None) for key in old])
        log.info("partition %d: ledger compacted, %d records into %d", partition, len(old),
                 len(parts))
        return True

    def _epoch(self, partition: int) -> int:
        epochs = getattr(self.table, "epochs", None)
        return 0 if epochs is None else epochs.get(partition, 0)

    def _note_fenced(self, keys: list[bytes]) -> None:
        fenced = getattr(self.table, "fenced", None)
        if fenced is not None:
            fenced.note(keys)

    async def _still(self, shard: object, partition: int, epoch: int) -> bool:
        """Yield to the event loop; whether the partition's shard is still this one."""
        await asyncio.sleep(0)
        if self.cores.epoch != epoch or self.cores.get(partition) is not shard:
            log.info("partition %d: rebalance during the retention pass; compaction skipped",
                     partition)
            return False
        return True
