"""A zombie owner's ledger writes are fenced: they change no count (streams.fencing).

A worker paused past its session timeout and resumed (a zombie) still writes apply rounds for
the partition it lost until its next rebalance. Each owner that takes a partition over writes a
fence (a new epoch) before its first round, and every key carries its writer's epoch: a record
of an older epoch for bundles from the fence's ``from`` on is read by nobody.

Against the real broker: the zombie's record is written into the real changelog after the new
owner's fence, and it carries markers and an event the ledger does not have, so it changes the
counts wherever it is read. It must change none on a rebuild (a restarted worker), in a replica
(a second worker's standby), or through a compaction of the ledger read back from Kafka; and
``kpi_ledger_fenced_records_total`` counts it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from test_worker_equivalence import PARTITIONS, Setup, generate_events, wait_all_accounted

from engine.calendar import Calendar
from engine.config import Config
from engine.core import Core
from engine.kafka_client import client_kwargs
from streams.fencing import parse
from streams.ledger import INVALID, Compaction, Shard, ledger_key, live_keys
from streams.tables import restore_shard
from streams.topics import changelog_topic_name

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: Invalid markers of input messages that never existed (offsets far beyond the file's).
ZOMBIE_MARKERS = 7


@pytest.fixture(scope="module")
def small_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_events(tmp_path_factory, 41, 2_000)


@pytest.fixture
def setup(kafka_broker, unique_name, tmp_path, small_events, web_access) -> Iterator[Setup]:
    s = Setup(kafka_broker.bootstrap, unique_name, tmp_path, small_events, web_access)
    yield s
    s.close()


async def _changelog(config: Config) -> list[tuple[int, int, bytes, bytes | None]]:
    """``(partition, offset, key, value)`` of every changelog record, in offset order."""
    topic = changelog_topic_name(config)
    consumer = AIOKafkaConsumer(**client_kwargs(config.kafka), enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        records = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records += [(r.partition, r.offset, r.key, r.value)
                            for r in batch.get(tp, [])]
        return sorted(records, key=lambda r: (r[0], r[1]))
    finally:
        await consumer.stop()


async def _write(config: Config, records: list[tuple[int, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(**client_kwargs(config.kafka))
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send_and_wait(changelog_topic_name(config), value, key=key,
                                         partition=partition)
    finally:
        await producer.stop()


def _zombie_records(records: list[tuple[int, int, bytes, bytes | None]]
                    ) -> list[tuple[int, bytes, bytes]]:
    """Per partition, a round the previous epoch's owner writes after the newest fence: its
    next bundle offset, and invalid markers of input messages the ledger has not seen."""
    zombie = []
    for p in range(PARTITIONS):
        keys = [(key, value) for partition, _, key, value in records
                if partition == p and value is not None]
        fences = [parse(key) for key, _ in keys if parse(key)[0] == "fence"]
        assert fences, f"partition {p} has no fence"
        _, _, epoch = max(fences, key=lambda fence: fence[2])
        rounds = [parse(key)[1] for key, _ in keys if parse(key)[0] != "fence"]
        markers = [[f"I|{p}", INVALID, "invalid_json", p, 10**9 + i]
                   for i in range(ZOMBIE_MARKERS)]
        value = orjson.dumps(markers)
        zombie.append((p, ledger_key(p, max(rounds) + 1, epoch - 1), value))
    return zombie


def _answered(worker) -> dict:
    """``/api/events`` once the worker answers for every partition (own shards and replicas;
    a rebalance may make it ``missing`` a moment, which is not what is tested here)."""
    answer: dict = {}

    def complete() -> bool:
        status, body = worker.get("/api/events")
        answer.update(orjson.loads(body) if status == 200 else {})
        return status == 200 and not answer.get("missing")

    worker.wait_until(complete, "an answer for every partition")
    return answer["events"]


def _fenced_total(worker) -> float:
    return worker.metrics()[("kpi_ledger_fenced_records_total", ())]


def test_a_zombies_round_after_the_fence_changes_no_count(setup: Setup) -> None:
    first = setup.worker("first")
    first.wait_ready()
    setup.produce()
    wait_all_accounted(setup, first)
    before = first.events()
    assert before["invalid"] > 0 and before["duplicate"] > 0
    assert first.stop(signal.SIGTERM) == 0

    # The previous owner (epoch e-1), resumed after the owner of epoch e fenced each
    # partition, writes one more round into every partition.
    config = setup.config
    zombie = _zombie_records(asyncio.run(_changelog(config)))
    asyncio.run(_write(config, zombie))

    # Without fencing, every reader counts the zombie's round: here, what it would add.
    records = asyncio.run(_changelog(config))
    unfenced = sum(_restored(_store(records, p), fenced=False).counts()["invalid"]
                   for p in range(PARTITIONS))
    assert unfenced == before["invalid"] + ZOMBIE_MARKERS * PARTITIONS
    fenced = sum(_restored(_store(records, p)).counts()["invalid"] for p in range(PARTITIONS))
    assert fenced == before["invalid"]

    # Rebuild: the restarted worker (its local files reused, the recovery reads the zombie's
    # records) and a second worker keeping replicas of the partitions it does not own.
    first = setup.worker("first-again")
    first.wait_ready()
    assert _answered(first) == before  # before the fix: invalid + 7 per partition
    assert _fenced_total(first) == PARTITIONS  # each logged and counted once
    second = setup.worker("second", second=True)
    for worker in (first, second):
        worker.wait_ready()
        assert _answered(worker) == before
    assert _fenced_total(second) >= 1  # its own partitions' rebuild, its replicas
    for worker in (first, second):
        assert worker.stop(signal.SIGTERM) == 0

    # Compaction of the ledger as Kafka has it: the zombie's records are dropped, not folded
    # into the summary (which would make them permanent).
    store = _store(records, 0)
    shard = _restored(store)
    counts = shard.counts()
    fenced: list[bytes] = []
    live = live_keys(store, fenced)
    assert fenced == [zombie[0][1]]
    compaction = Compaction(shard, 0, 0, 900 * 1024, epoch=99)
    for key, value in sorted(store.items()):
        compaction.feed(key, value, key in live)
    result = compaction.finish()
    assert result is not None
    parts, old = result
    assert zombie[0][1] in old  # deleted with the records it replaces
    compacted = {key: value for key, value in store.items() if key not in old} | dict(parts)
    assert _restored(compacted).counts() == counts
    # the zombie writes again after the compaction: still fenced
    compacted[zombie[0][1]] = zombie[0][2]
    assert _restored(compacted).counts() == counts


def _store(records: list[tuple[int, int, bytes, bytes | None]], partition: int
           ) -> dict[bytes, bytes]:
    """One partition's ledger as its local store would hold it."""
    store: dict[bytes, bytes] = {}
    for p, _, key, value in records:
        if p != partition:
            continue
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
    return store


def _restored(store: dict[bytes, bytes], fenced: bool = True) -> Shard:
    """A shard restored from ``store`` as the rebuild does (``fenced=False``: every data
    record, as before fencing)."""
    shard = Shard(Core(Calendar(Config().calendar)))
    if fenced:
        live = live_keys(store)
    else:
        live = {key for key in store if parse(key)[0] != "fence"}
    restore_shard(shard, iter(sorted((k, v) for k, v in store.items() if k in live)))
    return shard
