"""The retention pass: bound each partition's state and ledger by ``[limits] retention_days``.

Every :data:`RETENTION_INTERVAL_SECONDS` (a Faust timer, on the event loop that owns the
shards, :mod:`streams.worker`), for each active partition: the shard forgets what lies before
``now − retention_days`` (:meth:`streams.ledger.Shard.evict`), and the partition's ledger is
compacted (:func:`streams.ledger.compact`, decisions in :mod:`streams.ledger`): the new record
goes out through the ledger writer, the apply agent's path, so it reaches the changelog and the
local store alike, then tombstones for the records it replaces, the same way.

The eviction and the building of the new record run without an ``await``, so no apply round
sees a shard half-evicted. An apply round may run while the writes are awaited; its record has
a higher bundle offset than any the compaction replaces, so it stays live (``live_keys``). A
rebalance meanwhile abandons the pass for that partition before its tombstones: the new owner
rebuilds from the changelog, in which the compaction is either complete or ignored.
"""

from __future__ import annotations

import logging
import os

from engine.event import MICRO
from engine.timestamps import now_micros
from streams.apply import LEDGER_RECORD_MAX_BYTES, LedgerWriter
from streams.ledger import compact
from streams.tables import LedgerTable, PartitionCores

log = logging.getLogger(__name__)

#: How often the retention pass runs (seconds); ``RETENTION_INTERVAL_SECONDS`` overrides it.
RETENTION_INTERVAL_SECONDS = float(os.environ.get("RETENTION_INTERVAL_SECONDS", "3600"))

_DAY_US = 86_400 * MICRO


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
        shard.evict(horizon)
        records = list(self.table.stored_items(partition))
        result = compact(shard, records, partition, horizon, LEDGER_RECORD_MAX_BYTES)
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
