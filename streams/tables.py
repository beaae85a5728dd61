"""Durable entity records (the ``entities`` table) and the in-memory KPI core of each partition.

The table maps a route key (:func:`engine.routing.routes`) to the rows of every event applied
under that key: ``orjson`` bytes of a list of ``[aspect, row]`` pairs (:func:`event_to_row`).
That one record is both the effect and the proof that an event was applied, so a redelivered
event is recognised as a duplicate after any crash, and there is no window in which the effect
exists without the record or the other way round.

The :class:`~engine.core.Core` of a partition is a pure function of that partition's table
records, so it is never persisted: it is rebuilt by re-applying the stored rows whenever the
partition is (re)assigned, once Faust's table recovery has caught up with the changelog.

Which Faust hooks, and why they are reliable (faust-streaming 0.15.x, ``tables/recovery.py``):

- :meth:`EntityTable.on_rebalance` runs for every rebalance while stream processing is already
  suspended. Cores of partitions that are no longer active here are dropped at once (a later
  reassignment must rebuild from the changelog, since another worker may have written to it),
  and the worker stops being ready.
- :meth:`EntityTable.on_recovery_completed` is awaited by ``Recovery.on_recovery_completed``
  after the active changelog partitions have been read up to their high-water marks and
  *before* the stream partitions are resumed, so no event reaches the apply agent for a
  partition whose core is not built yet. It is also called when nothing needed recovering.
  A rebalance that starts meanwhile is detected (the recovery start signal, and an epoch
  counter bumped by ``on_rebalance``), and the stale rebuild is abandoned; the next recovery
  round calls the hook again.

Iterating one partition: the RocksDB store keeps one database per partition, and Faust's own
iteration only covers active partitions; here one partition's database is read directly. The
in-memory store keeps a single dict that also holds standby data, so its keys are filtered by
the default partitioner that placed them (:func:`streams.topics.partition_for_key`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import faust
import orjson
from faust.types import TP

from engine.config import Config
from engine.core import Core
from engine.event import event_from_row
from streams.topics import partition_for_key

log = logging.getLogger(__name__)

TABLE_NAME = "entities"
#: Rebuilding yields to the event loop every this many records (heartbeats, web requests).
REBUILD_YIELD_EVERY = 2000


def append_rows(existing: bytes | None, new_rows: list[bytes]) -> bytes:
    """The stored value with encoded ``[aspect, row]`` pairs appended, without re-decoding.

    ``existing`` is an encoded JSON list (or None); each item of ``new_rows`` is the encoding
    of one pair exactly as the ingest agent produced it.
    """
    joined = b",".join(new_rows)
    if existing is None or existing == b"[]":
        return b"[" + joined + b"]"
    return existing[:-1] + b"," + joined + b"]"


class PartitionCores:
    """One :class:`Core` per active partition, plus the worker's readiness."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._cores: dict[int, Core] = {}
        self.ready = False
        self.epoch = 0  # bumped by every rebalance; a rebuild from an older epoch is stale

    def __len__(self) -> int:
        return len(self._cores)

    def partitions(self) -> list[int]:
        return sorted(self._cores)

    def get(self, partition: int) -> Core | None:
        return self._cores.get(partition)

    def active_cores(self) -> list[Core]:
        return [self._cores[p] for p in sorted(self._cores)]

    def begin_rebalance(self, keep: set[int]) -> None:
        """A rebalance started: not ready, and only the cores of ``keep`` survive."""
        self.epoch += 1
        self.ready = False
        self.retain(keep)

    def retain(self, keep: set[int]) -> None:
        for partition in [p for p in self._cores if p not in keep]:
            del self._cores[partition]

    def install(self, partition: int, core: Core) -> None:
        self._cores[partition] = core

    def new_core(self) -> Core:
        return Core(self.config.calendar)


def rebuild_core(core: Core, items: Iterator[tuple[Any, bytes]]) -> int:
    """Re-apply every stored ``[aspect, row]`` pair of ``items`` to ``core``; return the count."""
    applied = 0
    for _key, value in items:
        for aspect, row in orjson.loads(value):
            core.apply(event_from_row(row), aspect)
            applied += 1
    return applied


class EntityTable(faust.Table):
    """The ``entities`` table, with the rebuild hooks and collected changelog futures.

    :meth:`on_key_set` keeps the future of every changelog record it sends, so the apply agent
    can wait until Kafka has acknowledged a batch's records before the batch's input offsets
    are acknowledged (Faust's own flush before a commit gives up after 0.1 s per message).
    """

    cores: PartitionCores
    unconfirmed_batches: int

    def __init__(self, app: faust.App, *, cores: PartitionCores, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.cores = cores
        self._pending: list[asyncio.Future] = []
        self.unconfirmed_batches = 0

    def on_key_set(self, key: Any, value: Any) -> None:
        fut = self.send_changelog(self.partition_for_key(key), key, value)
        self._pending.append(fut)
        self._sensor_on_set(self, key, value)

    def take_pending(self) -> list[asyncio.Future]:
        pending, self._pending = self._pending, []
        return pending

    # -- partition lifecycle -------------------------------------------------------------------

    def _active_partitions(self) -> set[int]:
        topic = self.changelog_topic_name
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        topic = self.changelog_topic_name
        revoked_partitions = {tp.partition for tp in revoked if tp.topic == topic}
        self.cores.begin_rebalance(self._active_partitions() - revoked_partitions)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        try:
            await self._rebuild_cores({tp.partition for tp in active_tps})
        except Exception as exc:  # Faust runs this hook in a task whose errors nobody reads
            log.exception("rebuilding KPI state from the %s table failed", self.name)
            await self.app.crash(exc)

    def _recovery_restarting(self) -> bool:
        return self.app.tables.recovery.signal_recovery_start.is_set()

    async def _rebuild_cores(self, active: set[int]) -> None:
        cores = self.cores
        epoch = cores.epoch
        if self._recovery_restarting():
            return
        cores.retain(active)
        for partition in sorted(active - set(cores.partitions())):
            core = cores.new_core()
            count = 0
            for chunk in _chunks(self.stored_items(partition), REBUILD_YIELD_EVERY):
                count += rebuild_core(core, iter(chunk))
                await asyncio.sleep(0)
                if cores.epoch != epoch or self._recovery_restarting():
                    log.info("rebalance during rebuild of partition %d; will rebuild again",
                             partition)
                    return
            cores.install(partition, core)
            log.info("partition %d: KPI state rebuilt from %d stored events", partition, count)
        cores.ready = True

    def stored_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` stored for ``partition``, straight from the local store."""
        store = self.data
        if hasattr(store, "_db_for_partition") and hasattr(store, "_visible_items"):
            yield from store._visible_items(store._db_for_partition(partition))
            return
        partitions = self.partitions or self.app.conf.topic_partitions
        for key, value in list(store.data.items()):
            if value is not None and partition_for_key(key, partitions) == partition:
                yield key, value

    def rebuild_partition_now(self, partition: int) -> Core:
        """Synchronous rebuild, for an event of a partition that has no core (should not happen)."""
        log.warning("partition %d has no KPI state yet; rebuilding it synchronously", partition)
        core = self.cores.new_core()
        rebuild_core(core, self.stored_items(partition))
        self.cores.install(partition, core)
        return core


def _chunks(items: Iterator[tuple[bytes, bytes]], size: int) -> Iterator[list[tuple[bytes, bytes]]]:
    chunk: list[tuple[bytes, bytes]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
