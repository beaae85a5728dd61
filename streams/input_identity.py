"""Is the input topic still the one the ledger's offsets came from? If not, refuse to start.

Why: the apply stage recognises replays by the input offset each item came from (the highest
taken per route key and input partition, :mod:`streams.ledger`). If the input topic is deleted
and created again, or ``[topics] input`` names another topic, offsets start again at 0, and the
new topic's first messages look like replays of the old one's: they would be skipped without a
word. Kafka even drops the ingest group's committed offsets with a deleted topic, so the ingest
stage reads the new topic from its start, straight into that trap.

So the ingest stage records, with its commits, which record each input partition was read up to:
the topic's name and, per partition, the committed offset and a *fingerprint* of the record
before it (its Kafka timestamp and a CRC-32 of its key and value, :func:`fingerprint`). Kafka's
topic ids would say it more directly, but the client's metadata requests predate them. The
record is kept as the commit metadata of a group of its own, ``<app_id>-input-identity``, on
the bundles topic's partitions (input partition *p* on bundles partition *p* mod their count):
the input topic's deletion does not touch it, and reading it at start is one request. At start,
:func:`input_topic_mismatch` compares: another topic name, a partition that ends before the
recorded offset, or a different record there is an error that says what happened and what to
do. A record removed by the topic's retention cannot be compared; that is not a mismatch.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    NotCoordinatorForGroupError,
)

from engine.config import Config
from engine.kafka_client import client_kwargs
from streams.topics import bundles_topic_name


def identity_group(config: Config) -> str:
    return f"{config.worker.app_id}-input-identity"


def fingerprint(record: Any) -> str:
    """What identifies ``record`` in its log: ``<timestamp>:<crc32 of key and value>``;
    ``""`` for a stand-in of a record the client could not read (nothing to compare)."""
    if getattr(record, "rejection", None) is not None:
        return ""
    crc = zlib.crc32(record.value or b"", zlib.crc32(record.key or b""))
    return f"{record.timestamp}:{crc}"


class IdentityRecorder:
    """Commits the identity of what the ingest stage has read (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topic = config.topics.input
        self.bundles = bundles_topic_name(config)
        self.partitions = config.topics.partitions
        self.consumer: AIOKafkaConsumer | None = None
        self.read: dict[int, tuple[int, str]] = {}  # input partition -> (offset, fingerprint)
        self._dirty: set[int] = set()  # bundles partitions whose metadata changed

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(**client_kwargs(self.config.kafka),
                                         group_id=identity_group(self.config),
                                         enable_auto_commit=False)
        await self.consumer.start()
        tps = [TopicPartition(self.bundles, q) for q in range(self.partitions)]
        self.consumer.assign(tps)
        self.consumer.pause(*tps)  # commits only; never fetches

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    def update(self, committed: dict[TopicPartition, tuple[int, str]]) -> None:
        """Input offsets just committed, with the fingerprint of the record before each."""
        for tp, (offset, mark) in committed.items():
            if mark:
                self.read[tp.partition] = (offset, mark)
                self._dirty.add(tp.partition % self.partitions)

    async def commit(self) -> None:
        """Commit what changed; a failure is logged by the caller and retried next time."""
        if not self._dirty or self.consumer is None:
            return
        offsets = {}
        for q in sorted(self._dirty):
            entries = {str(p): list(value) for p, value in sorted(self.read.items())
                       if p % self.partitions == q}
            metadata = json.dumps({"topic": self.topic, "read": entries},
                                  separators=(",", ":"))
            offsets[TopicPartition(self.bundles, q)] = (0, metadata)
        await self.consumer.commit(offsets)
        self._dirty.clear()


async def input_topic_mismatch(config: Config) -> str | None:
    """Why the ledger's input offsets do not belong to ``[topics] input`` as it is now, or
    ``None`` when they do (or nothing was recorded yet)."""
    from aiokafka.admin import AIOKafkaAdminClient

    topic = config.topics.input
    admin = AIOKafkaAdminClient(**client_kwargs(config.kafka))
    await admin.start()
    try:
        committed = await _group_offsets(admin, identity_group(config))
    finally:
        await admin.close()
    recorded: dict[int, tuple[int, str]] = {}
    names: set[str] = set()
    for tp, meta in committed.items():
        if tp.topic != bundles_topic_name(config) or not meta.metadata:
            continue
        try:
            document = json.loads(meta.metadata)
            names.add(document["topic"])
            for p, (offset, mark) in document["read"].items():
                recorded[int(p)] = (int(offset), str(mark))
        except (ValueError, KeyError, TypeError):
            continue
    if not names:
        return None
    advice = (" The KPI state holds input offsets of the old topic, so the new one's first "
              "messages would be skipped as replays. Start with a new [worker] app_id (state "
              "is rebuilt from what the input holds), or restore the original topic.")
    if names != {topic}:
        return (f"[topics] input is {topic!r}, but this app_id's KPI state was read from "
                f"{', '.join(sorted(map(repr, names - {topic}))) or repr(topic)}." + advice)
    consumer = AIOKafkaConsumer(**client_kwargs(config.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
        missing = sorted(p for p in recorded if p not in partitions)
        if missing:
            return (f"input topic {topic!r} has no partition {missing[0]}, but this app_id "
                    f"read it up to offset {recorded[missing[0]][0]}: the topic was deleted "
                    "and created again." + advice)
        tps = [TopicPartition(topic, p) for p in sorted(recorded)]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            offset, mark = recorded[tp.partition]
            before = offset - 1
            if before < starts[tp]:
                continue  # removed by retention: nothing to compare
            if before >= ends[tp]:
                return (f"input topic {topic!r} partition {tp.partition} ends at offset "
                        f"{ends[tp]}, but this app_id read it up to offset {offset}: the topic "
                        "was deleted and created again (or truncated)." + advice)
            consumer.seek(tp, before)
            record = await _one(consumer, tp)
            if record is None or fingerprint(record) != mark:
                return (f"input topic {topic!r} partition {tp.partition}: the record at offset "
                        f"{before} is not the one this app_id read there; the topic was "
                        "deleted and created again." + advice)
        return None
    finally:
        await consumer.stop()


async def _group_offsets(admin: Any, group: str, timeout: float = 60.0) -> dict:
    """The group's committed offsets; waits while the broker's group coordinator is not up yet
    (a new cluster creates its offsets topic on first use)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await admin.list_consumer_group_offsets(group)
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError,
                NotCoordinatorForGroupError):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)


async def _one(consumer: AIOKafkaConsumer, tp: TopicPartition) -> Any:
    for tp_other in consumer.assignment():
        if tp_other != tp:
            consumer.pause(tp_other)
    consumer.resume(tp)
    for _ in range(50):
        batch = await consumer.getmany(tp, timeout_ms=200, max_records=1)
        if batch.get(tp):
            return batch[tp][0]
    return None
