"""The ingest stage: input messages judged in batches and forwarded as bundles; invalid ones
dead-lettered.

Why not a Faust agent: Faust's per-message stream machinery (an event, an ack, sensors and a
channel hop per message) costs more than everything else a message needs; a do-nothing agent
manages ~9.5k messages/s on the reference machine, a plain aiokafka consumer ~500k. Ingest holds
no state, so it runs beside Faust with its own consumer (group ``<app_id>-ingest``, offsets
committed by hand) and producer (:mod:`streams.kafka`): in a child process of the worker
(:mod:`streams.ingest_process`), or as a service of the Faust app.

Per batch of ``getmany``:

1. judge each message: :class:`engine.decode.Decoder`, then the live clock checks. A valid
   event becomes one item per :func:`engine.routing.routes` aspect; an invalid message a dead
   letter (original key, value and headers plus the ``kpi-*`` headers) and a marker item, so
   that the apply stage can count it durably (:mod:`streams.ledger`);
2. send one bundle per target partition, ``partition=`` :func:`streams.topics.partition_for_key`
   of its items' route keys, and the dead letters;
3. once Kafka has acknowledged all of it, the batch's offsets may be committed. Commits go out
   every :data:`COMMIT_INTERVAL_SECONDS`, when partitions are revoked, and at a clean stop.

What the apply stage relies on (:mod:`streams.ledger`): items of one input partition reach each
target partition in offset order, without gaps. A batch is sent only after the previous one
was acknowledged, a target partition gets one bundle per batch (a batch is split, and its
parts sent one after the other, only where a bundle would exceed :data:`BUNDLE_MAX_BYTES`),
and a failed send stops the process (:func:`streams.kafka.exit_on_kafka_failure`) before
anything later is sent. A crash or rebalance re-forwards from the last commit; the apply stage
recognises those replays. Judging the next batch overlaps the wait for the last one's
acknowledgements, so the wait costs no CPU time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    CorruptRecordException,
    KafkaError,
    UnsupportedCodecError,
)
from mode import Service

from engine.config import Config
from engine.decode import Decoder
from engine.event import Rejection
from engine.kafka_client import client_kwargs
from engine.timestamps import now_micros
from streams.kafka import FatalHandler, exit_on_kafka_failure, new_producer
from streams.input_identity import IdentityRecorder, fingerprint
from streams.logsafe import exception_summary
from streams.ledger import encode_bundle, event_items, invalid_item
from streams.membership import instance_id
from streams.topics import (
    HEADER_DETAIL,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    bundles_topic_name,
    ingest_group,
)

log = logging.getLogger(__name__)
crc32 = zlib.crc32

#: Messages per batch: large enough that per-batch costs vanish, small enough that a batch is
#: judged in ~30 ms and the event loop stays responsive.
BATCH_RECORDS = 5000
#: Longest wait in ``getmany`` when nothing is buffered (it returns as soon as data arrives).
POLL_TIMEOUT_MS = 200
#: How often the consumer lag gauge is refreshed.
LAG_INTERVAL_SECONDS = 1.0
#: A bundle larger than this is cut (the broker's default message limit is 1 MiB).
BUNDLE_MAX_BYTES = 512 * 1024
COMMIT_INTERVAL_SECONDS = 1.0
#: Bytes of an original value kept when the full value does not fit the dead-letter topic.
TRUNCATED_VALUE_BYTES = 64 * 1024
#: Per-partition fetch size: a few batches' worth, so one fetch feeds several ``getmany``.
FETCH_PARTITION_BYTES = 4 * 1024 * 1024
#: See :func:`streams.tables.shorten_fetch_wait`: a fetch for drained partitions must not make
#: the others wait.
FETCH_MAX_WAIT_MS = 100


#: How much of a record a dead letter keeps (:func:`dead_letter_copy`).
WHOLE, TRUNCATED, BARE = range(3)


def dead_letter_copy(record: Any, rejection: Rejection,
                     level: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of the dead letter of ``record`` at ``level``.

    ``WHOLE``: the original key, value and headers plus the ``kpi-*`` headers. ``TRUNCATED``,
    for a dead letter the producer or broker refused as too large: the value cut to
    :data:`TRUNCATED_VALUE_BYTES` (header ``kpi-truncated-from-bytes``: its full size), the
    original headers only if they are small (else ``kpi-headers-dropped``: how many), the key
    likewise. ``BARE``: the ``kpi-*`` headers alone. The source headers always say where the
    original is, so it can be read from the input topic while retention keeps it.
    """
    key, value = record.key, record.value
    original = list(record.headers or ())
    headers = [
        (HEADER_REASON, rejection.reason.encode()),
        (HEADER_DETAIL, rejection.detail.encode("utf-8", "replace")),
        (HEADER_SOURCE_TOPIC, record.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
    ]
    if level == WHOLE:
        return _never_empty(key, value, original + headers)
    if value is not None and (level == BARE or len(value) > TRUNCATED_VALUE_BYTES):
        headers.append(("kpi-truncated-from-bytes", str(len(value)).encode()))
        value = None if level == BARE else value[:TRUNCATED_VALUE_BYTES]
    if key is not None and (level == BARE or len(key) > TRUNCATED_VALUE_BYTES):
        headers.append(("kpi-key-dropped-bytes", str(len(key)).encode()))
        key = None
    header_bytes = sum(len(k) + len(v or b"") for k, v in original)
    if original and (level == BARE or header_bytes > TRUNCATED_VALUE_BYTES):
        headers.append(("kpi-headers-dropped", str(len(original)).encode()))
        original = []
    return _never_empty(key, value, original + headers)


def _never_empty(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
                 ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The client sends no record without key and value (other clients do, and a stand-in
    for an unreadable record has neither): an empty value then, and a header saying so."""
    if key is None and value is None:
        return None, b"", headers + [("kpi-value-absent", b"true")]
    return key, value, headers


class UnreadableRecord(NamedTuple):
    """Stands in for an input record the Kafka client could not parse (a header key that is
    not UTF-8, a batch that cannot be decompressed): dead-lettered without key, value or
    headers, which cannot be read, and counted as ``invalid_field``."""

    topic: str
    partition: int
    offset: int
    rejection: Rejection
    key: None = None
    value: None = None
    headers: tuple = ()
    timestamp: int = -1


def unreadable(exc: BaseException) -> bool:
    """Whether ``exc`` from ``getmany`` means a record cannot be parsed (as opposed to the
    consumer stopping, or a Kafka error that says nothing about the data)."""
    if isinstance(exc, (UnsupportedCodecError, CorruptRecordException)):
        return True
    return not isinstance(exc, (KafkaError, ConsumerStoppedError, asyncio.CancelledError))


class _Send:
    """One part of a batch: bundles per target partition, dead letters, and bookkeeping."""

    __slots__ = ("bundles", "sizes", "dead_letters", "offsets", "fingerprints", "consumed",
                 "invalid", "futures", "dead_letter_futures")

    def __init__(self) -> None:
        self.bundles: dict[int, list[bytes]] = {}
        self.sizes: dict[int, int] = {}
        self.dead_letters: list[tuple[Any, Rejection]] = []
        self.offsets: dict[TopicPartition, int] = {}  # committable once this part is acked
        self.fingerprints: dict[TopicPartition, str] = {}  # of the record before each offset
        self.consumed = 0
        self.invalid: Counter[str] = Counter()
        self.futures: list[asyncio.Future] = []
        self.dead_letter_futures: list[asyncio.Future] = []


class Ingest(Service):
    """Consumes the input topic, forwards bundles and dead letters; counters only, no state."""

    def __init__(self, config: Config, metrics: Any,
                 on_fatal: FatalHandler = exit_on_kafka_failure,
                 on_crash: Callable[[BaseException], Awaitable[Any]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_crash = on_crash
        self.config = config
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.decoder = Decoder(config)
        self.partitions = config.topics.partitions
        self.input_topic = config.topics.input
        self.bundles_topic = bundles_topic_name(config)
        self.dead_letter_topic = config.topics.dead_letter
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: Any = None
        self._lock = asyncio.Lock()  # one batch at a time; revocation waits for it
        self._pending: _Send | None = None  # sent, acknowledgement not awaited yet
        self._committable: dict[TopicPartition, int] = {}
        #: per input partition, the offset after the last record forwarded (where to seek
        #: back to when ``getmany`` failed half-way: records it drained are lost with it)
        self._resume: dict[TopicPartition, int] = {}
        #: per input partition, the fingerprint of the record before the committable offset
        self._fingerprints: dict[TopicPartition, str] = {}
        self.identity = IdentityRecorder(config)
        self._last_commit = 0.0
        self._last_lag = 0.0
        self._stopping = False
        self._loop_task: asyncio.Task | None = None

    # -- judging (no I/O) ----------------------------------------------------------------------

    def judge(self, raw: bytes | None, now_us: int) -> list[tuple[str, bytes]] | Rejection:
        """Route keys and encoded items for a valid message at source ``(0, 0)``, or why it is
        invalid. Never raises."""
        verdict = self._verdict(raw, now_us)
        if isinstance(verdict, Rejection):
            return verdict
        return event_items(verdict, 0, 0)

    def _verdict(self, raw: bytes | None, now_us: int) -> Any:
        try:
            result = self.decoder(raw)
            if type(result) is Rejection:
                return result
            late = self.decoder.check_live_time(result, now_us)
            return result if late is None else late
        except Exception as exc:  # a decoder bug must neither stop nor lose anything
            # The exception's text may quote the event (personal data): its type only.
            log.error("could not judge a message (%s); dead-lettering it",
                      exception_summary(exc))
            return Rejection("invalid_field", f"the engine could not process this event: {exc!r}")

    def plan(self, batch: dict[TopicPartition, list[Any]], now_us: int) -> list[_Send]:
        """Judge a batch into one or more parts to send in order (see :data:`BUNDLE_MAX_BYTES`)."""
        parts = [_Send()]
        part = parts[0]
        decode = self.decoder
        check_live_time = self.decoder.check_live_time
        n = self.partitions
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            p = tp.partition
            for record in records:
                # The clock checks judge against the record's Kafka timestamp, so that a
                # message judged again (after a crash or rebalance) gets the same verdict.
                clock = record.timestamp * 1000 if record.timestamp is not None \
                    and record.timestamp >= 0 else now_us
                try:  # _verdict(), inlined
                    result = decode(record.value)
                    if type(result) is not Rejection:
                        result = check_live_time(result, clock) or result
                    elif type(record) is UnreadableRecord:
                        result = record.rejection
                except Exception:
                    result = self._verdict(record.value, clock)  # logs, never raises
                if type(result) is not Rejection:
                    try:
                        items = event_items(result, p, record.offset)
                    except Exception as exc:  # e.g. a value the ledger cannot encode
                        log.exception("could not encode an event; dead-lettering it")
                        result = Rejection("invalid_field",
                                           f"the engine could not encode this event: {exc!r}")
                if type(result) is Rejection:
                    part.dead_letters.append((record, result))
                    part.invalid[result.reason] += 1
                    items = [invalid_item(result.reason, p, record.offset)]
                for key, data in items:
                    q = crc32(key.encode()) % n  # partition_for_key(), inlined
                    size = part.sizes.get(q, 0) + len(data) + 1
                    if size > BUNDLE_MAX_BYTES and q in part.bundles:
                        part = _Send()
                        parts.append(part)
                        size = len(data) + 1
                    bundle = part.bundles.get(q)
                    if bundle is None:
                        bundle = part.bundles[q] = []
                    bundle.append(data)
                    part.sizes[q] = size
                part.consumed += 1
            if records:
                offsets[tp] = records[-1].offset + 1
                part.fingerprints[tp] = fingerprint(records[-1])
        part.offsets = offsets
        return parts

    # -- sending --------------------------------------------------------------------------------

    async def _send(self, part: _Send) -> None:
        send = self.producer.send
        try:
            for q, items in part.bundles.items():
                part.futures.append(await send(self.bundles_topic, encode_bundle(items),
                                               partition=q))
        except Exception as exc:
            self.on_fatal(exc)
            raise
        for record, rejection in part.dead_letters:
            part.dead_letter_futures.append(
                await self._send_dead_letter(record, rejection, truncate=False))
        self._pending = part

    async def _settle(self) -> None:
        """Wait for the last sent part's acknowledgements; its offsets become committable."""
        part, self._pending = self._pending, None
        if part is None:
            return
        try:
            await asyncio.gather(*part.futures)
            for fut, (record, rejection) in zip(part.dead_letter_futures, part.dead_letters):
                try:
                    await fut
                except Exception as exc:
                    log.warning("dead letter of %s[%d]@%d refused (%r); sending it truncated",
                                record.topic, record.partition, record.offset, exc)
                    await self._resend_dead_letter(record, rejection)
        except Exception as exc:
            self.on_fatal(exc)
            raise
        self._committable.update(part.offsets)
        self._fingerprints.update(part.fingerprints)
        self.metrics.count_ingest(part.consumed, part.invalid)
        self.metrics.count_dead_letters(len(part.dead_letters))

    async def _send_dead_letter(self, record: Any, rejection: Rejection, *,
                                truncate: bool) -> Any:
        """Send the dead letter of ``record`` (a future of its acknowledgement); ``truncate``:
        start with a copy that fits (:func:`dead_letter_copy`). Only when even the bare copy
        is refused does the process stop (the topic is gone, or Kafka is down)."""
        levels = (TRUNCATED, BARE) if truncate else (WHOLE, TRUNCATED, BARE)
        for level in levels:
            key, value, headers = dead_letter_copy(record, rejection, level)
            try:
                return await self.producer.send(self.dead_letter_topic, value, key=key,
                                                headers=headers)
            except Exception as exc:
                if level == BARE:
                    self.on_fatal(exc)
                    raise
                log.warning("dead letter of %s[%d]@%d refused (%r); sending a smaller copy",
                            record.topic, record.partition, record.offset, exc)
        raise AssertionError("unreachable")

    async def _resend_dead_letter(self, record: Any, rejection: Rejection) -> None:
        """The broker refused the whole dead letter: a truncated copy, else a bare one."""
        for level in (TRUNCATED, BARE):
            key, value, headers = dead_letter_copy(record, rejection, level)
            try:
                await (await self.producer.send(self.dead_letter_topic, value, key=key,
                                                headers=headers))
                return
            except Exception as exc:
                if level == BARE:
                    raise  # _settle stops the process
                log.warning("truncated dead letter of %s[%d]@%d refused (%r); sending it bare",
                            record.topic, record.partition, record.offset, exc)

    # -- the loop ---------------------------------------------------------------------------------

    async def forward(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Judge and send one batch (under the lock that revocation waits for).

        Records of a partition revoked after ``getmany`` returned them are forwarded too:
        its next owner starts at the committed offset and forwards them again, which the
        apply stage recognises; dropping them instead would lose them if the partition came
        back here, past them.
        """
        async with self._lock:
            parts = self.plan(batch, now_micros()) if batch else []
            for tp, records in batch.items():
                if records:
                    self._resume[tp] = records[-1].offset + 1
            await self._settle()
            for part in parts[:-1]:
                await self._send(part)
                await self._settle()
            if parts:
                await self._send(parts[-1])

    async def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        try:
            while not self._stopping:
                try:
                    batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS,
                                                   max_records=BATCH_RECORDS)
                except Exception as exc:
                    if not unreadable(exc):
                        raise
                    await self._read_carefully(consumer, exc)
                    continue
                await self.forward(batch)  # an empty batch settles the last one
                if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_SECONDS:
                    await self._commit(consumer.assignment())
                if time.monotonic() - self._last_lag >= LAG_INTERVAL_SECONDS:
                    await self._report_lag(consumer)
            async with self._lock:
                await self._settle()
            await self._commit(consumer.assignment())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("the ingest stage failed")
            if self.on_crash is not None:
                await self.on_crash(exc)

    async def _read_carefully(self, consumer: AIOKafkaConsumer, error: BaseException) -> None:
        """``getmany`` raised while parsing records: find each record that cannot be parsed,
        dead-letter a stand-in for it (:class:`UnreadableRecord`) and forward the others.

        Why this way: aiokafka parses a fetched batch as it hands out records, raises at the
        first one it cannot parse, and drops what that call had drained (of any partition);
        reading again would raise again, forever. So every partition is first sought back to
        the record after the last one forwarded, then read one record per call — the records
        of the failing call lie within :data:`BATCH_RECORDS` of that point — and where a call
        raises, the partition's position names the record that cannot be read.
        """
        log.warning("the Kafka client could not read a fetched record (%r); reading the input "
                    "one record at a time to find it", error)
        for tp in sorted(consumer.assignment()):
            await self._seek_back(consumer, tp)
        for tp in sorted(consumer.assignment()):
            clean = 0
            pending: list[Any] = []
            while clean <= BATCH_RECORDS and not self._stopping:
                try:
                    got = await consumer.getmany(tp, timeout_ms=POLL_TIMEOUT_MS, max_records=1)
                except Exception as exc:
                    if not unreadable(exc):
                        raise
                    await consumer.getmany(tp, timeout_ms=0)  # moves the position to it
                    offset = await consumer.position(tp)
                    pending.append(UnreadableRecord(
                        tp.topic, tp.partition, offset,
                        Rejection("invalid_field", "the Kafka client could not read this "
                                  f"record ({exc!r}); a record header key must be UTF-8, a "
                                  "batch compressed with gzip, snappy, lz4 or zstd")))
                    log.warning("%s[%d]@%d cannot be read; dead-lettering a stand-in (%r)",
                                tp.topic, tp.partition, offset, exc)
                    await self.forward({tp: pending})
                    pending = []
                    consumer.seek(tp, offset + 1)
                    clean = 0
                    continue
                records = got.get(tp)
                if not records:
                    break  # caught up
                pending.extend(records)
                clean += len(records)
            await self.forward({tp: pending} if pending else {})

    async def _seek_back(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        offset = self._resume.get(tp)
        if offset is None:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
                return
            offset = committed
        consumer.seek(tp, offset)

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Messages behind the end of each assigned input partition (for the lag alert).

        Only partitions with a known high watermark (after a first fetch) are reported, so
        this never waits on the broker for a position.
        """
        self._last_lag = time.monotonic()
        lag: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = await consumer.position(tp)
            lag[(tp.topic, tp.partition)] = max(0, high - position)
        self.metrics.set_lag(lag)

    async def _commit(self, partitions: set[TopicPartition]) -> None:
        self._last_commit = time.monotonic()
        offsets = {tp: off for tp, off in self._committable.items() if tp in partitions}
        if not offsets or self.consumer is None:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.info("ingest offsets not committed (%r); will retry", exc)
            return
        self.identity.update({tp: (offset, self._fingerprints.get(tp, ""))
                              for tp, offset in offsets.items()})
        for tp, offset in offsets.items():
            if self._committable.get(tp) == offset:
                del self._committable[tp]
        try:
            await self.identity.commit()
        except (CommitFailedError, KafkaError) as exc:
            log.info("input identity not recorded (%r); will retry", exc)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish the batch in flight and commit what it covers before others take over."""
        async with self._lock:
            await self._settle()
        await self._commit(set(revoked))
        for tp in revoked:
            self._committable.pop(tp, None)
            self._resume.pop(tp, None)

    # -- lifecycle ---------------------------------------------------------------------------

    async def on_start(self) -> None:
        config = self.config
        self.producer = new_producer(config, "ingest")
        await self.producer.start()
        await self.identity.start()
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(config.kafka),
            group_id=ingest_group(config),
            group_instance_id=instance_id(config),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            fetch_max_bytes=FETCH_PARTITION_BYTES * max(4, self.partitions),
        )
        self.consumer.subscribe([self.input_topic], listener=_Rebalance(self))
        await self.consumer.start()
        self._loop_task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        """Stop after the batch in flight, with its offsets committed."""
        self._stopping = True
        if self._loop_task is not None:
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.identity.stop()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.ingest.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass
