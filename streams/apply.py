"""The apply stage: bundles in, partition shards updated, one ledger record per partition out.

All decisions are :meth:`streams.ledger.Shard.take_bundle`'s; this module moves bytes. A round
is what the apply agent takes from Faust at once (a few bundles). It is applied to the shards
in memory without an ``await`` in between, so a rebalance or a web request never sees a shard
half-way through a bundle; then each partition's entries go out as one ledger record, and the
round returns (and Faust acknowledges its bundles, so their offsets can be committed) only once
Kafka has acknowledged the records. Should that fail, the process exits
(:func:`streams.kafka.exit_on_kafka_failure`): Faust acknowledges a round's bundles when its
loop is left by an exception, which would commit offsets whose effects never reached Kafka.

Why the ledger is written here and not with ``table[key] = value``: a Faust table write is a
changelog message, a store write and a persisted-offset write, ~40 µs each, and per-key records
would need one per modified entity. One record per partition and round, sent by a plain
producer (:class:`LedgerWriter`), costs a few microseconds per *round*. Once Kafka has
acknowledged it, the record goes into the local store with its changelog offset
(:meth:`streams.tables.LedgerTable.store_acknowledged`), exactly where Faust's recovery would
have put it; so the local store never holds what Kafka lacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import faust
import orjson
from faust.types import TP
from mode import Service

from engine.config import Config
from streams.kafka import FatalHandler, exit_on_kafka_failure, new_producer
from streams.ledger import Shard, ledger_key
from streams.metrics import WorkerMetrics
from streams.tables import LedgerTable

log = logging.getLogger(__name__)

#: A round's entries for one partition fit one record below the broker's 1 MiB message limit;
#: a round whose bundles could exceed it is split. Entries are never larger than their items.
LEDGER_RECORD_MAX_BYTES = 900 * 1024
#: Pause after a round that left bundles of a partition held but not active to be read again.
UNOWNED_REREAD_PAUSE_SECONDS = 0.1


class LedgerWriter(Service):
    """Sends ledger records to the changelog and stores each once Kafka acknowledged it."""

    def __init__(self, config: Config, table: LedgerTable, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.table = table
        self.producer: Any = None
        #: one write at a time, so that each partition's records are acknowledged and stored
        #: in offset order (the local store's offset moves only without gaps, see
        #: LedgerTable.store_acknowledged); the apply rounds and the retention pass share it
        self._lock = asyncio.Lock()

    async def on_start(self) -> None:
        self.producer = new_producer(self.config, "ledger")
        await self.producer.start()

    async def on_stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def write(self, records: dict[int, tuple[bytes, bytes]]) -> None:
        """Send ``{partition: (key, value)}``; return once all are acknowledged and stored."""
        topic = self.table.changelog_topic_name
        async with self._lock:
            sent = [(partition, key, value,
                     await self.producer.send(topic, value, key=key, partition=partition))
                    for partition, (key, value) in records.items()]
            acknowledged = await asyncio.gather(*(future for *_, future in sent))
            for (partition, key, value, _), metadata in zip(sent, acknowledged):
                self.table.store_acknowledged(partition, key, value, metadata.offset)


    async def write_partition(self, partition: int,
                              records: list[tuple[bytes, bytes | None]]) -> None:
        """Send records (``None`` values: tombstones) to one partition; return once all are
        acknowledged and stored. The retention pass's path (:mod:`streams.retention`)."""
        topic = self.table.changelog_topic_name
        async with self._lock:
            sent = [(key, value,
                     await self.producer.send(topic, value, key=key, partition=partition))
                    for key, value in records]
            acknowledged = await asyncio.gather(*(future for *_, future in sent))
            for (key, value, _), metadata in zip(sent, acknowledged):
                self.table.store_acknowledged(partition, key, value, metadata.offset)


class Apply:
    """Applies rounds of bundles to the partition shards and writes their ledger records."""

    def __init__(self, app: faust.App, table: LedgerTable, writer: LedgerWriter,
                 metrics: WorkerMetrics, on_fatal: FatalHandler = exit_on_kafka_failure,
                 bundles_topic: str = "") -> None:
        self.app = app
        self.bundles_topic = bundles_topic
        self.table = table
        self.heap = table.heap
        self.writer = writer
        self.metrics = metrics
        self.on_fatal = on_fatal
        #: per bundles partition, the offset after the last bundle of the current round taken
        #: in order (streams.resume: where reading may resume once the round is durable)
        self.reached: dict[int, int] = {}
        #: bundles partitions where the stream skipped bundles, and the offset to read again
        self.gaps: dict[int, int] = {}
        #: bundles skipped because their partition is not active here (_shard_if_owned)
        self.skipped_foreign = 0
        #: the last round left bundles of a partition held but not active to be read again
        self.rereads_unowned = False
        self._metadata_asked = 0.0  # time.monotonic() of the last _refresh_metadata

    def lag(self) -> dict[int, int]:
        """Bundles not yet applied per bundles partition held (known high-water marks only)."""
        consumer = self.app.consumer
        lag: dict[int, int] = {}
        for tp in consumer.assignment():
            if tp.topic != self.bundles_topic:
                continue
            high = consumer.highwater(tp)
            # Where reading may resume (streams.resume: this worker's rounds and the ledger it
            # rebuilt from, so a partition taken back after a pause counts what others applied
            # meanwhile), or Faust's last processed offset, whichever is further.
            known = [self.table.positions.get(tp.partition)]
            committed = consumer._committed_offset.get(tp)
            if committed is not None:
                known.append(committed + 1)
            position = max(known)
            if high is None or high < 0 or position <= 0:
                continue
            lag[tp.partition] = max(0, high - position)
        return lag

    def apply(self, bundles: Sequence[faust.EventT]) -> dict[int, tuple[bytes, bytes]]:
        """Apply bundles to memory; the ledger record ``(key, value)`` of each partition."""
        cores = self.table.cores
        entries_of: dict[int, list[list]] = {}
        last_offset: dict[int, int] = {}
        counted: Counter[str] = Counter()
        duplicate: Counter[str] = Counter()
        replays = errors = 0
        reached = self.reached = {}
        points = self.table.positions
        foreign: dict[int, list[int]] = {}
        for event in bundles:
            message = event.message
            partition = message.partition
            shard = cores.get(partition)
            if shard is None:
                shard = self._shard_if_owned(partition)
                if shard is None:  # not ours (any more), or not yet: never applied here
                    foreign.setdefault(partition, []).append(message.offset)
                    # Not to be counted by Faust as processed, so that its committed offset
                    # does not move past it (see _shard_if_owned).
                    message.acked = True
                    continue
            expected = reached.get(partition)
            if expected is None:
                expected = points.get(partition)
            if message.offset > expected:
                # Faust dropped the bundles before this one (it does while its flow is
                # suspended): never apply past a gap, read again from the first missing one
                self.gaps[partition] = expected
                continue
            reached[partition] = max(expected, message.offset + 1)
            try:
                items = orjson.loads(message.value)
            except orjson.JSONDecodeError:
                log.exception("bundle %s[%d]@%d is not JSON", message.topic, partition,
                              message.offset)
                errors += 1
                continue
            entries = entries_of.get(partition)
            if entries is None:
                entries = entries_of[partition] = []
            skipped, failed = shard.take_bundle(items, entries, counted, duplicate)
            replays += skipped
            errors += failed
            last_offset[partition] = message.offset
        for partition, offsets in foreign.items():
            if self._assigned_here(partition):
                # the consumer holds the partition, the assignor does not list its changelog
                # partition as active here (yet): read the bundles again once it does
                self.gaps.setdefault(partition, points.get(partition))
                self.rereads_unowned = True
                whose = "held by this worker's consumer, read again once it is active"
            else:
                whose = "skipped, its owner reads them"
            log.warning("bundles partition %d, offsets %d-%d: the partition is not active "
                        "here; %s", partition, min(offsets), max(offsets), whose)
        self.skipped_foreign += sum(map(len, foreign.values()))
        self.metrics.count_applied(counted, duplicate)
        self.metrics.count_replays(replays)
        if errors:
            self.metrics.apply_errors.inc(errors)
        self.heap.grew(sum(map(len, entries_of.values())))
        epochs = self.table.epochs  # the writer's epoch, in the key (streams.fencing)
        return {partition: (ledger_key(partition, last_offset[partition],
                                       epochs.get(partition, 0)), orjson.dumps(entries))
                for partition, entries in entries_of.items() if entries}

    def _shard_if_owned(self, partition: int) -> Shard | None:
        """The shard of a partition that has none yet: rebuilt now if the partition is active
        here, else None (the bundle must not be applied).

        A bundle of a partition that is not active here was seen right after a start (it
        stopped the process, "bundle of partition N, which is not active here"); see
        docs/reliability.md for the windows Faust 0.15 leaves open (its ``getmany`` filters a
        fetch by the active partitions read before awaiting it and stamps the records with the
        generation read after it; the changelog partitions a fresh app's first assignment is
        computed from may lag the bundles partitions). Either way the bundle is not applied:
        without the partition's recovered state it cannot be, and writing its ledger record
        into a changelog partition another worker owns would corrupt that one. Nothing is
        lost: the bundle is marked so that Faust does not count it as processed (its commit
        does not move past it); if the consumer does not hold the bundles partition, its
        owner reads it (Faust also discards commits for partitions not assigned); if it
        does, the stage reads it again from its resume point (a gap, in
        :meth:`process`) until a rebalance makes the partition active here or moves it.
        """
        topic = self.table.changelog_topic_name
        active = {tp.partition for tp in self.app.assignor.assigned_actives()
                  if tp.topic == topic}
        if partition in active:
            return self.table.rebuild_partition_now(partition)
        return None

    def _assigned_here(self, partition: int) -> bool:
        """Whether this worker's consumer holds the bundles partition now (unknown: yes, so
        that the bundles are read again rather than left to an owner there may not be)."""
        try:
            return TP(self.bundles_topic, partition) in self.app.consumer.assignment()
        except Exception:
            return True

    async def process(self, bundles: Sequence[faust.EventT]) -> None:
        positions = self.table.positions
        for group in size_groups(bundles):
            records = self.apply(group)
            if records:
                self.table.unconfirmed_batches += 1
                try:
                    await self.writer.write(records)
                except Exception as exc:
                    self.on_fatal(exc)
                    raise
                self.table.unconfirmed_batches -= 1
            for partition, reached in self.reached.items():  # durable now: never read again
                positions.advance(partition, reached)
        gaps, self.gaps = self.gaps, {}
        for partition, offset in gaps.items():
            log.warning("bundles partition %d: bundles from offset %d were skipped; reading "
                        "them again", partition, offset)
            await self.app.consumer.seek(TP(self.bundles_topic, partition),
                                         positions.get(partition))
        if self.rereads_unowned:  # until the rebalance that makes it active: do not spin
            self.rereads_unowned = False
            await self._refresh_metadata()
            await asyncio.sleep(UNOWNED_REREAD_PAUSE_SECONDS)

    async def _refresh_metadata(self) -> None:
        """Ask the consumer for fresh cluster metadata, at most once a second.

        Why: if the assignment was computed while the changelog topic was missing from the
        group leader's metadata (Faust's assignor skips a topic it cannot see: "Ignoring
        missing topic"), only a metadata change starts the rebalance that assigns it, and the
        consumer's own refresh comes every 5 minutes (``consumer_metadata_max_age_ms``). A
        best effort: a failure here is logged, the stage goes on reading again.
        """
        now = time.monotonic()
        if now - self._metadata_asked < 1.0:
            return
        self._metadata_asked = now
        thread: Any = getattr(self.app.consumer, "_thread", None)  # Faust's consumer thread
        if thread is None:
            return
        try:
            client = thread._ensure_consumer()._client

            async def refresh() -> None:  # in the consumer's thread, like Faust's own calls
                await client.force_metadata_update()

            await thread.call_thread(refresh)
        except Exception as exc:
            log.info("could not ask for fresh metadata (%r)", exc)


def size_groups(bundles: Sequence[faust.EventT],
                limit: int = LEDGER_RECORD_MAX_BYTES) -> Iterator[Sequence[faust.EventT]]:
    """Consecutive groups of bundles whose sizes per partition stay within ``limit``."""
    start = 0
    sizes: dict[int, int] = {}
    for i, event in enumerate(bundles):
        message = event.message
        size = len(message.value or b"")
        total = sizes.get(message.partition, 0) + size
        if total > limit and message.partition in sizes:
            yield bundles[start:i]
            start, sizes, total = i, {}, size
        sizes[message.partition] = total
    if start < len(bundles):
        yield bundles[start:]
