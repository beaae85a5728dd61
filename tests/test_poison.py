"""Poison never stops the ingest stage: every message class that can be fetched ends forwarded
(to be counted or found duplicate) or dead-lettered, against the real broker.

Each class here once stopped the engine in a crash loop (the same offset is read again after
every restart) or was judged differently when judged again (issue #11):

- money whose micro-units overflow the ledger's 64-bit integers (``amount`` 1.8e13);
- a batch compressed with gzip, lz4, snappy or zstd (the codecs were not installed);
- a record header key that is not UTF-8 (the Kafka client raises while parsing the batch);
- a record too large for the dead-letter topic even when truncated (huge headers);
- ``future_timestamp``/``too_late`` judged against the wall clock, so a re-judged message could
  get another verdict: now judged against the record's Kafka timestamp.

The ingest stage (:class:`streams.ingest.Ingest`) runs in this process on a real broker; what it
forwards is read back from the bundles and dead-letter topics and checked offset by offset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.config import config_from_mapping
from streams.ingest import Ingest
from streams.metrics import WorkerMetrics
from streams.topics import bundles_topic_name

pytestmark = pytest.mark.kafka

PARTITIONS = 2
MAX_EVENT_BYTES = 4096
WAIT_SECONDS = 120.0
INPUT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # larger than what the dead-letter topic takes


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def lead(event_id: str, occurred_at: datetime) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": "lead.created", "lead_id": event_id,
                         "occurred_at": _iso(occurred_at)})


class RawHeaderKey(str):
    """A header key whose bytes on the wire are not UTF-8 (other clients can send those)."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return b"\xff\xfe-" + str.encode(self)


async def _create_topics(bootstrap: str, topics: dict[str, dict[str, str]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1, topic_configs=configs)
                                   for name, configs in topics.items()])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, messages: list[dict],
                   compression: str | None = None, partition: int | None = 0
                   ) -> list[tuple[int, int]]:
    """Send ``messages`` (``value``, optional ``key``, ``headers``, ``timestamp_ms``) in
    batches compressed with ``compression``, to ``partition`` (``None``: by key)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression,
                                linger_ms=20, max_request_size=INPUT_MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        futures = [await producer.send(topic, m["value"], key=m.get("key"),
                                       partition=partition, headers=m.get("headers"),
                                       timestamp_ms=m.get("timestamp_ms"))
                   for m in messages]
        return [(r.partition, r.offset) for r in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def produce_with_a_header_key_not_utf8(monkeypatch: pytest.MonkeyPatch, bootstrap: str,
                                             topic: str, before: dict, bad: dict
                                             ) -> list[tuple[int, int]]:
    """``before``, then ``bad`` with a header key whose bytes are not UTF-8, in one batch of
    partition 0. (aiokafka's pure-Python record builder calls the key's encode(); the C one
    does not, so the pure-Python one is used for this batch.)"""
    import aiokafka.producer.message_accumulator as accumulator
    import aiokafka.producer.producer as producer_module
    from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
    for module in (accumulator, producer_module):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
    try:
        return await _produce(bootstrap, topic, [
            before, {**bad, "headers": [(RawHeaderKey("k"), b"v")]}])
    finally:
        monkeypatch.undo()


def invalid_poison(now: datetime) -> dict[str, tuple[dict, str]]:
    """``label -> (message, reason)`` of the poison classes that must be dead-lettered with
    ``reason`` (the header key that is not UTF-8: :func:`produce_with_a_header_key_not_utf8`).
    Time checks are judged against each record's own timestamp."""
    now_ms = int(now.timestamp() * 1000)
    hour_ms = 3_600_000
    return {
        "money": ({"value": orjson.dumps({
            "event_id": "money", "type": "deal.created", "deal_id": "D", "team_id": "t",
            "rep_id": "r", "amount": 1.8e13, "occurred_at": _iso(now)})}, "invalid_field"),
        "ts-future": ({"value": lead("ts-future", now - timedelta(hours=1)),
                       "timestamp_ms": now_ms - 2 * hour_ms}, "future_timestamp"),
        "ts-late": ({"value": lead("ts-late", now - timedelta(days=900))}, "too_late"),
        "oversized": ({"value": b"x" * (2 * 1024 * 1024),
                       "headers": [("blob", b"h" * (2 * 1024 * 1024))]}, "too_large"),
    }


async def _read_all(bootstrap: str, topic: str, done: Callable[[list], bool]) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=INPUT_MAX_MESSAGE_BYTES)
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline and not done(records):
            for part in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def _sources(bundle_records: list) -> dict[tuple[int, int], list]:
    """``(input partition, offset) -> [kinds]`` of every forwarded item."""
    seen: dict[tuple[int, int], list] = {}
    for record in bundle_records:
        for key, kind, payload, partition, offset in orjson.loads(record.value):
            seen.setdefault((partition, offset), []).append((kind, payload))
    return seen


@pytest.fixture
def ingest_config(kafka_broker, unique_name):
    names = {"input": unique_name("in"), "dead_letter": unique_name("dlq"),
             "app_id": unique_name("app")}
    config = config_from_mapping({
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap},
        "topics": {"input": names["input"], "dead_letter": names["dead_letter"],
                   "partitions": PARTITIONS},
        "worker": {"app_id": names["app_id"]},
        "limits": {"max_event_bytes": MAX_EVENT_BYTES},
    })
    asyncio.run(_create_topics(kafka_broker.bootstrap, {
        names["input"]: {"max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)},
        names["dead_letter"]: {},
        bundles_topic_name(config): {},
    }))
    return config


def test_every_poison_class_ends_forwarded_or_dead_lettered(ingest_config, monkeypatch) -> None:
    config = ingest_config
    bootstrap = config.kafka.bootstrap_servers
    now = datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    hour_ms = 3_600_000
    # Judged against each record's own timestamp, these verdicts do not depend on when the
    # message is judged (against the wall clock, the first would be future_timestamp and the
    # second too_late). Kafka 4 refuses record timestamps more than an hour ahead.
    ahead_of_wall_clock = {"value": lead("ts-ok", now + timedelta(minutes=30)),
                           "timestamp_ms": now_ms + 40 * 60_000}
    old_record = {"value": lead("ts-old-record", now - timedelta(days=801)),
                  "timestamp_ms": now_ms - 2 * 24 * hour_ms}
    poison = {label: message for label, (message, _) in invalid_poison(now).items()}
    ahead_of_its_record, late_for_its_record = poison["ts-future"], poison["ts-late"]
    huge_money, oversized = poison["money"], poison["oversized"]
    plain = [{"value": lead(f"plain-{i}", now - timedelta(minutes=i))} for i in range(5)]

    expected: dict[str, str | None] = {}  # event_id or label -> reason (None: forwarded)
    batches: list[tuple[str | None, list[dict]]] = [
        (None, plain + [huge_money, ahead_of_wall_clock, old_record, ahead_of_its_record,
                        late_for_its_record, oversized]),
    ]
    for codec in ("gzip", "lz4", "snappy", "zstd"):
        batches.append((codec, [{"value": lead(f"{codec}-{i}", now)} for i in range(20)]))

    async def produce_all() -> list[tuple[int, int]]:
        positions: list[tuple[int, int]] = []
        for codec, messages in batches:
            positions += await _produce(bootstrap, config.topics.input, messages, codec)
        # A header key that is not UTF-8, between two valid messages of the same partition.
        positions += await produce_with_a_header_key_not_utf8(
            monkeypatch, bootstrap, config.topics.input,
            {"value": lead("before-bad-header", now)}, {"value": lead("bad-header", now)})
        # In a batch of its own: the client cannot read past a bad record within its batch
        # (those records get stand-ins too), but the next batch must be read normally.
        positions += await _produce(bootstrap, config.topics.input,
                                    [{"value": lead("after-bad-header", now)}])
        return positions

    positions = asyncio.run(produce_all())
    total = len(positions)
    for i in range(5):
        expected[f"plain-{i}"] = None
    expected.update({"money": "invalid_field", "ts-ok": None, "ts-old-record": None,
                     "ts-future": "future_timestamp",
                     "ts-late": "too_late", "oversized": "too_large",
                     "before-bad-header": None, "bad-header": "invalid_field",
                     "after-bad-header": None})
    for codec, messages in batches[1:]:
        expected.update({f"{codec}-{i}": None for i in range(len(messages))})
    labels = [*(f"plain-{i}" for i in range(5)), "money", "ts-ok", "ts-old-record", "ts-future",
              "ts-late", "oversized"]
    for codec, messages in batches[1:]:
        labels += [f"{codec}-{i}" for i in range(len(messages))]
    labels += ["before-bad-header", "bad-header", "after-bad-header"]
    assert len(labels) == total
    label_at = dict(zip(positions, labels))

    fatal: list[BaseException] = []

    async def run_ingest() -> tuple[list, list]:
        async def on_crash(exc: BaseException) -> None:
            fatal.append(exc)

        ingest = Ingest(config, WorkerMetrics(), on_fatal=fatal.append, on_crash=on_crash)
        await ingest.start()
        try:
            bundles = await _read_all(
                bootstrap, bundles_topic_name(config),
                lambda records: bool(fatal) or len(_sources(records)) >= total)
        finally:
            await ingest.stop()
        dead = await _read_all(bootstrap, config.topics.dead_letter,
                               lambda records: bool(fatal) or len(records) >= 5)
        return bundles, dead

    bundles, dead = asyncio.run(run_ingest())
    assert not fatal, fatal
    sources = _sources(bundles)
    assert set(sources) == set(positions), sorted(set(positions) - set(sources))
    for position, label in label_at.items():
        kinds = sources[position]
        reason = expected[label]
        if reason is None:
            assert kinds[0][0] == "primary", (label, kinds)
        else:
            assert kinds == [("invalid", reason)], (label, kinds)

    by_offset = {}
    for record in dead:
        headers = dict(record.headers)
        by_offset[int(headers["kpi-source-offset"])] = (record, headers)
    dead_labels = {label_at[(0, offset)]: value for offset, value in by_offset.items()}
    assert set(dead_labels) == {label for label, r in expected.items() if r is not None}
    for label, (record, headers) in dead_labels.items():
        assert headers["kpi-reason"].decode() == expected[label]
    money_detail = dead_labels["money"][1]["kpi-detail"].decode()
    assert "amount" in money_detail and "9,000,000,000,000" in money_detail
    record, headers = dead_labels["oversized"]
    assert int(headers["kpi-truncated-from-bytes"]) == len(oversized["value"])
    assert record.value == oversized["value"][:len(record.value)]
    assert "kpi-headers-dropped" in headers
    record, headers = dead_labels["bad-header"]
    assert b"UTF-8" in headers["kpi-detail"]
