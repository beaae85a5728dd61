"""The two agents of the live worker: ``ingest`` (bytes in, judged) and ``apply`` (state).

Both consume batches (``stream.take_events``): a plain Faust agent handles ~15k messages/s,
and one table write per event ~5k/s, while a batch costs one table write per *modified route
key*. All KPI logic is in :class:`engine.core.Core`; the agents only move bytes and record.

``ingest`` (input topic, raw bytes): decode with :func:`engine.decode.decode`, then the live
clock checks (:func:`engine.decode.check_live_time`). A rejected message goes to the
dead-letter topic with its original key, value and headers plus the ``kpi-*`` headers naming
the reason; a valid event is re-published on the keyed topic once per
:func:`engine.routing.routes` pair, key = route key, value = ``orjson [aspect, row]``.

``apply`` (keyed topic): each pair goes to the core of its partition; ``Core.apply`` answers
whether it is new. New pairs are appended to the route key's record in the ``entities`` table,
one write per key per batch (see :mod:`streams.tables`). Counting happens here, for the primary
aspect only, so every event is counted exactly once however many aspects it has.

At-least-once, made exact: a batch's input offsets are acknowledged (and later committed) only
after Kafka acknowledged everything the batch produced. Should producing fail after aspects
were applied in memory, the process exits at once (:func:`exit_on_kafka_failure`): Faust
acknowledges a batch's events when its loop is left by an exception, which would commit
offsets whose effects never reached Kafka. A restart replays them against the durable records.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import faust
import orjson
from faust.streams import _current_event  # the context variable Table writes consult

from engine.config import Config
from engine.decode import check_live_time, decode
from engine.event import Event, Rejection, event_from_row, event_to_row
from engine.routing import ASPECT_PRIMARY, routes
from engine.timestamps import now_micros
from streams.metrics import WorkerMetrics
from streams.tables import EntityTable, append_rows
from streams.topics import (
    HEADER_DETAIL,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    Topics,
)

log = logging.getLogger(__name__)

INGEST_BATCH = 2000
APPLY_BATCH = 2000
#: Longest wait for a batch to fill: the added latency at low rates.
BATCH_WITHIN_SECONDS = 0.1
#: Exit status after an unrecoverable Kafka produce failure (``EX_SOFTWARE``).
EXIT_KAFKA_FAILURE = 70
#: Bytes of an original value kept when the full value does not fit the dead-letter topic.
TRUNCATED_VALUE_BYTES = 64 * 1024


def exit_on_kafka_failure(exc: BaseException) -> NoReturn:
    """Stop the process now, committing nothing more; a restart redoes the uncommitted work."""
    log.critical("Kafka did not accept the worker's output (%r); exiting so that no offset "
                 "is committed for work whose effect is not durable", exc)
    logging.shutdown()
    os._exit(EXIT_KAFKA_FAILURE)


FatalHandler = Callable[[BaseException], Any]


class Ingest:
    """Judges input messages and forwards them; holds no state besides counters."""

    def __init__(self, app: faust.App, config: Config, topics: Topics, metrics: WorkerMetrics,
                 on_fatal: FatalHandler = exit_on_kafka_failure) -> None:
        self.app = app
        self.topics = topics
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.currency = config.money.currency
        self.max_event_bytes = config.limits.max_event_bytes
        self.max_future_skew_seconds = config.limits.max_future_skew_seconds
        self.retention_days = config.limits.retention_days
        self.keyed_name = topics.keyed.get_topic_name()
        self.dead_letter_name = topics.dead_letter.get_topic_name()

    def judge(self, raw: bytes | None, now_us: int) -> list[tuple[bytes, bytes]] | Rejection:
        """The keyed records for a valid message, or why it is invalid. Never raises."""
        try:
            result = decode(raw, currency=self.currency, max_event_bytes=self.max_event_bytes)
            if isinstance(result, Rejection):
                return result
            late = check_live_time(result, now_us,
                                   max_future_skew_seconds=self.max_future_skew_seconds,
                                   retention_days=self.retention_days)
            if late is not None:
                return late
            return keyed_records(result)
        except Exception as exc:  # a decoder bug must neither stop nor lose anything
            log.exception("could not judge a message; dead-lettering it")
            return Rejection("invalid_field", f"the engine could not process this event: {exc!r}")

    async def process(self, events: Sequence[faust.EventT]) -> None:
        producer = self.app.producer
        now_us = now_micros()
        invalid: Tally[str] = Tally()
        forwarded: list[Any] = []
        dead_letters: list[tuple[Any, faust.EventT, Rejection]] = []
        try:
            for event in events:
                message = event.message
                verdict = self.judge(message.value, now_us)
                if isinstance(verdict, Rejection):
                    invalid[verdict.reason] += 1
                    fut = await self._send_dead_letter(message, verdict, truncate=False)
                    dead_letters.append((fut, event, verdict))
                    continue
                for key, value in verdict:
                    forwarded.append(await producer.send(
                        self.keyed_name, key, value, None, None, None))
            await asyncio.gather(*forwarded)
            sent = 0
            for fut, event, verdict in dead_letters:
                try:
                    await fut
                except Exception as exc:
                    log.warning("dead letter of %s[%d]@%d refused (%r); sending it truncated",
                                event.message.topic, event.message.partition,
                                event.message.offset, exc)
                    await (await self._send_dead_letter(event.message, verdict, truncate=True))
                sent += 1
        except Exception as exc:
            self.on_fatal(exc)
            raise
        self.metrics.count_ingest(len(events), invalid)
        self.metrics.count_dead_letters(sent)

    async def _send_dead_letter(self, message: Any, rejection: Rejection, *,
                                truncate: bool) -> Any:
        value = message.value
        headers = list(message.headers or ())
        headers += [
            (HEADER_REASON, rejection.reason.encode()),
            (HEADER_DETAIL, rejection.detail.encode("utf-8", "replace")),
            (HEADER_SOURCE_TOPIC, message.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(message.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(message.offset).encode()),
        ]
        if truncate and value is not None and len(value) > TRUNCATED_VALUE_BYTES:
            headers.append(("kpi-truncated-from-bytes", str(len(value)).encode()))
            value = value[:TRUNCATED_VALUE_BYTES]
        try:
            return await self.app.producer.send(
                self.dead_letter_name, message.key, value, None, None, headers)
        except Exception:
            if truncate:
                raise
            return await self._send_dead_letter(message, rejection, truncate=True)


def keyed_records(event: Event) -> list[tuple[bytes, bytes]]:
    """``(route key, orjson [aspect, row])`` for each aspect of a valid event."""
    row = event_to_row(event)
    return [(key.encode(), orjson.dumps([aspect, row])) for key, aspect in routes(event)]


class Apply:
    """Applies keyed records to the partition cores and appends them to the table records."""

    def __init__(self, app: faust.App, table: EntityTable, metrics: WorkerMetrics,
                 on_fatal: FatalHandler = exit_on_kafka_failure) -> None:
        self.app = app
        self.table = table
        self.metrics = metrics
        self.on_fatal = on_fatal

    def apply(self, events: Sequence[faust.EventT]) -> None:
        """Apply a batch to memory and write its table records; no ``await`` inside, so a
        rebalance or a web request never sees a core that is ahead of its table records."""
        table = self.table
        cores = table.cores
        new_rows: dict[bytes, list[bytes]] = {}
        anchors: dict[bytes, faust.EventT] = {}
        counted: Tally[str] = Tally()
        duplicate: Tally[str] = Tally()
        for event in events:
            message = event.message
            core = cores.get(message.partition)
            if core is None:
                core = self._missing_core(message.partition)
            try:
                aspect, row = orjson.loads(message.value)
                kpi_event = event_from_row(row)
                applied = core.apply(kpi_event, aspect)
            except Exception:
                log.exception("cannot apply keyed record %s[%d]@%d", message.topic,
                              message.partition, message.offset)
                self.metrics.apply_errors.inc()
                continue
            if applied:
                new_rows.setdefault(message.key, []).append(message.value)
                anchors[message.key] = event
            if aspect == ASPECT_PRIMARY:
                (counted if applied else duplicate)[kpi_event.type] += 1
        for key, rows in new_rows.items():
            # Faust writes to the local store and changelog partition of the "current event";
            # a batch spans partitions, so make it an event of this key's partition.
            token = _current_event.set(weakref.ref(anchors[key]))
            try:
                table[key] = append_rows(table.data.get(key), rows)
            finally:
                _current_event.reset(token)
        self.metrics.count_applied(counted, duplicate)

    def _missing_core(self, partition: int) -> Any:
        topic = self.table.changelog_topic_name
        active = {tp.partition for tp in self.app.assignor.assigned_actives()
                  if tp.topic == topic}
        if partition in active:
            return self.table.rebuild_partition_now(partition)
        self.on_fatal(RuntimeError(f"event of partition {partition}, which is not active here"))
        raise RuntimeError("unreachable")

    async def process(self, events: Sequence[faust.EventT]) -> None:
        self.apply(events)
        pending = self.table.take_pending()
        if not pending:
            return
        self.table.unconfirmed_batches += 1
        try:
            await asyncio.gather(*pending)
        except Exception as exc:
            self.on_fatal(exc)
            raise
        self.table.unconfirmed_batches -= 1


def register_agents(app: faust.App, topics: Topics, ingest: Ingest, apply: Apply) -> None:
    """Attach the two agents to ``app``."""

    @app.agent(topics.input, name="ingest")
    async def ingest_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(INGEST_BATCH, within=BATCH_WITHIN_SECONDS):
            await ingest.process(events)

    @app.agent(topics.keyed, name="apply")
    async def apply_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(APPLY_BATCH, within=BATCH_WITHIN_SECONDS):
            await apply.process(events)
