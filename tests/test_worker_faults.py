"""Faults a running worker rides out, each compared number by number with the file report.

A generated file (redeliveries, invalid messages, the v2 pipeline) goes through a real
``kpi-engine worker`` on a real broker while the fault happens; afterwards ``/api/kpis``
must equal ``kpi-engine report`` on the file (``reportdiff``), and every message must be
accounted for (counted, duplicate or invalid):

- the dead-letter topic deleted mid-stream: no dead letter and no event lost, and an error
  that names the topic (docs/decisions.md);
- every compression codec and every poison class mixed into the input: the report equals the
  file's, with the poison counted as invalid (the ingest stage alone: tests/test_poison.py);
- the single broker restarted mid-stream (opt-in: ``-m fault``).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from reportdiff import diff_reports
from test_poison import (
    INPUT_MAX_MESSAGE_BYTES,
    _produce,
    invalid_poison,
    lead,
    produce_with_a_header_key_not_utf8,
)
from test_worker_equivalence import PARTITIONS, Setup, generate_events, instants

from engine.kafka_client import client_kwargs, ensure_topics
from engine.kafka_local import LocalKafka
from engine.producer import entity_key
from streams.dead_letter_topic import DeadLetterTopicWatch
from streams.topics import topic_configs, topic_partitions

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 6_000


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~6k events over the last 60 days, 2 % redeliveries, 1 % invalid messages."""
    return generate_events(tmp_path_factory, 31, EVENTS)


@pytest.fixture
def setup(kafka_broker, unique_name, tmp_path, events_file, web_access):
    s = Setup(kafka_broker.bootstrap, unique_name, tmp_path, events_file, web_access)
    yield s
    s.close()


def split_file(setup: Setup, parts: int) -> list[Path]:
    lines = [line for line in setup.events_file.read_bytes().splitlines() if line.strip()]
    size = -(-len(lines) // parts)
    paths = []
    for i in range(parts):
        path = setup.tmp_path / f"part-{i}.jsonl"
        path.write_bytes(b"\n".join(lines[i * size:(i + 1) * size]) + b"\n")
        paths.append(path)
    return paths


def _count_lines(paths: list[Path]) -> int:
    return sum(1 for path in paths for line in path.read_bytes().splitlines() if line.strip())


def assert_equal_to_file(setup: Setup, worker, extra_invalid: int = 0) -> None:
    """``/api/kpis`` equals the file report at three instants; ``extra_invalid`` messages that
    are not in the file were sent too, each of which must be counted invalid."""
    for as_of in instants():
        expected = setup.file_report(as_of)
        expected["events"]["invalid"] += extra_invalid
        expected["events"]["read"] += extra_invalid
        differences = diff_reports(worker.report(as_of), expected)
        assert not differences, (as_of, differences[:20])


async def _admin(setup: Setup, action) -> object:
    admin = AIOKafkaAdminClient(**client_kwargs(setup.config.kafka))
    await admin.start()
    try:
        return await action(admin)
    finally:
        await admin.close()


async def _dead_letters(setup: Setup, expected: int) -> list:
    consumer = AIOKafkaConsumer(setup.config.topics.dead_letter,
                                **client_kwargs(setup.config.kafka),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(records) < expected:
            for part in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(part)
        for part in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(part)  # anything beyond what was expected
    finally:
        await consumer.stop()
    return records


def dead_letters_acknowledged(worker) -> float:
    """``kpi_dead_letter_sent_total``: dead letters Kafka acknowledged, since the start."""
    return sum(value for (name, _), value in worker.metrics().items()
               if name == "kpi_dead_letter_sent_total")


def test_the_dead_letter_topic_deleted_mid_stream_loses_nothing_and_says_so(
        setup: Setup) -> None:
    head, rest = split_file(setup, 2)
    worker = setup.worker("worker")
    worker.wait_ready()
    setup.produce(head)
    head_lines = sum(1 for line in head.read_bytes().splitlines() if line.strip())
    worker.wait_until(lambda: worker.events().get("read") == head_lines, "the first half")
    invalid_before = worker.events()["invalid"]
    assert invalid_before > 0
    dead_letter = setup.config.topics.dead_letter
    asyncio.run(_admin(setup, lambda admin: admin.delete_topics([dead_letter])))

    setup.produce(rest)
    worker.wait_until(lambda: worker.events().get("read") == setup.lines,
                      "every message to be accounted for")
    assert worker.process is not None and worker.process.poll() is None, "the worker stopped"
    assert_equal_to_file(setup, worker)
    # Every dead letter acknowledged by Kafka. Counted is not enough: the last batch's dead
    # letters are still in flight when its bundles are counted, and those routed to a
    # partition the auto-created topic lacks wait for the watch to add it; a consumer
    # started before that reads the partitions the topic had then, and learns of more only
    # at its next metadata refresh (5 minutes).
    worker.wait_until(lambda: dead_letters_acknowledged(worker) == worker.events()["invalid"],
                      "every dead letter to be acknowledged")
    # No dead letter lost: the topic holds one for every invalid message since the deletion.
    invalid_after = worker.events()["invalid"] - invalid_before
    records = asyncio.run(_dead_letters(setup, invalid_after))
    assert len(records) == invalid_after, (len(records), invalid_after)
    log = (setup.tmp_path / "worker.log").read_text(errors="replace")
    assert f"dead-letter topic {dead_letter!r}" in log and "deleted" in log, log[-3000:]
    assert worker.stop(signal.SIGTERM) == 0


async def _until_visible(watch: DeadLetterTopicWatch, partitions: int) -> None:
    """Wait until a topic just created shows in the metadata the watch reads (the broker
    answers the creation before its metadata cache has it; a look in between finds no topic
    and takes the creation for a deletion)."""
    deadline = time.monotonic() + 30
    while await watch.partitions() != partitions:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


def test_a_deleted_dead_letter_topic_is_created_again_as_configured(setup: Setup) -> None:
    """Where the broker does not auto-create it (``auto.create.topics.enable=false``, common
    in production), nothing would: the watch creates it with the configured partitions and
    configs, and its own look-ups never auto-create it with the broker's defaults. Where the
    broker auto-creates it with as many partitions, the watch sets its configs again."""
    config = setup.config
    topic = config.topics.dead_letter

    async def run() -> list:
        await ensure_topics(config.kafka, topic_partitions(config), 1, topic_configs(config))
        watch = DeadLetterTopicWatch(config)
        try:
            assert await watch.check() is None
            assert watch.partitions_seen == PARTITIONS
            await _admin(setup, lambda admin: admin.delete_topics([topic]))
            deadline = time.monotonic() + 30
            while await watch.partitions() is not None:  # deletion is asynchronous
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            assert await watch.partitions() is None  # looking did not create it
            assert await watch.check() == "created"
            await _until_visible(watch, PARTITIONS)
            assert await watch.check() is None
            # Deleted again and auto-created by a broker whose default is as many partitions:
            # only the topic configs tell.
            await _admin(setup, lambda admin: admin.delete_topics([topic]))
            while await watch.partitions() is not None:
                assert time.monotonic() < deadline + 30
                await asyncio.sleep(0.2)
            await _admin(setup, lambda admin: admin.create_topics(
                [NewTopic(topic, PARTITIONS, 1)]))
            await _until_visible(watch, PARTITIONS)
            assert await watch.check() == "configs set"
            assert await watch.check() is None
        finally:
            await watch.stop()
        return await _admin(setup, lambda admin: admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]))

    responses = asyncio.run(run())
    entries = [entry for response in responses for resource in response.resources
               for entry in resource[4]]
    # set on the topic (config source 1, DYNAMIC_TOPIC_CONFIG), not the broker's default
    assert ("min.insync.replicas", "1", 1) in [(e[0], e[1], e[3]) for e in entries], entries


def test_a_deletion_before_the_watchs_first_timed_look_is_repaired_too(setup: Setup) -> None:
    """The watch learns the topic's partitions and configs when it starts (before the ingest
    stage), not at its first timed look: a deletion in between, the topic then auto-created
    with one partition by the ingest stage's first dead letter, is still recognised and
    repaired. Before, the first look took the auto-created topic for the original: nothing
    was repaired, ever, and the dead letters routed to partitions 1 and 2 were never
    delivered (9 and 11 of 23 in the topic in the reproduction, as in CI)."""
    config = setup.config
    topic = config.topics.dead_letter

    async def run() -> None:
        await ensure_topics(config.kafka, topic_partitions(config), 1, topic_configs(config))
        watch = DeadLetterTopicWatch(config)
        await watch.on_start()  # what the worker does before its ingest stage starts
        try:
            await _admin(setup, lambda admin: admin.delete_topics([topic]))
            deadline = time.monotonic() + 30
            while await watch.partitions() is not None:  # deletion is asynchronous
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            # as the broker's auto-creation makes it: one partition, no topic configs
            await _admin(setup, lambda admin: admin.create_topics([NewTopic(topic, 1, 1)]))
            await _until_visible(watch, 1)
            assert await watch.check() == "partitions added"  # the first timed look
            await _until_visible(watch, PARTITIONS)
            assert await watch.check() is None
        finally:
            await watch.on_stop()

    asyncio.run(run())


def test_every_codec_and_every_poison_class_through_a_worker(setup: Setup,
                                                             monkeypatch) -> None:
    """The file in four parts, each compressed with another codec, and the poison classes of
    tests/test_poison.py between them: the report equals the file's, the poison is invalid."""
    config = setup.config
    bootstrap = config.kafka.bootstrap_servers
    if config.kafka.security_protocol != "PLAINTEXT":
        pytest.skip("the poison producer (tests/test_poison.py) speaks PLAINTEXT only")

    async def create_input() -> None:
        await _admin(setup, lambda admin: admin.create_topics([NewTopic(
            config.topics.input, PARTITIONS, 1,
            topic_configs={"max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)})]))

    asyncio.run(create_input())  # before the worker: it takes what it finds
    worker = setup.worker("worker")
    worker.wait_ready()
    now = datetime.now(timezone.utc)
    poison = invalid_poison(now)

    async def produce_all() -> int:
        sent = 0
        for part, codec in zip(split_file(setup, 4), ("gzip", "snappy", "lz4", "zstd")):
            lines = [line for line in part.read_bytes().splitlines() if line.strip()]
            await _produce(bootstrap, config.topics.input,
                           [{"value": line, "key": entity_key(line)} for line in lines],
                           codec, partition=None)
            for message, _ in poison.values():
                await _produce(bootstrap, config.topics.input, [message], codec)
                sent += 1
        # A header key that is not UTF-8, after a message of its own batch: both are
        # dead-lettered (the client cannot read past it within the batch), then one more.
        await produce_with_a_header_key_not_utf8(
            monkeypatch, bootstrap, config.topics.input,
            {"value": b"{not json"}, {"value": lead("bad-header", now)})
        await _produce(bootstrap, config.topics.input, [{"value": b""}])  # an empty value
        return sent + 3

    poison_sent = asyncio.run(produce_all())
    worker.wait_until(lambda: worker.events().get("read") == setup.lines + poison_sent,
                      "every message, the poison too, to be accounted for")
    time.sleep(1)  # anything counted twice would show now
    assert_equal_to_file(setup, worker, extra_invalid=poison_sent)
    assert worker.process is not None and worker.process.poll() is None
    assert worker.stop(signal.SIGTERM) == 0


@pytest.mark.fault
def test_the_single_broker_restarted_mid_stream(unique_name, tmp_path, events_file,
                                                web_access) -> None:
    """The file is produced in ten chunks a second apart; the moment the worker counts the
    fifth (its commits and changelog writes in flight) its only broker is stopped (SIGTERM, as
    a restart does) and started again 20 s later, then the other chunks follow: the same
    worker process goes on, and the report equals the file's."""
    with LocalKafka(tmp_path / "kafka") as kafka:
        setup = Setup(kafka.bootstrap, unique_name, tmp_path, events_file, web_access)
        try:
            chunks = split_file(setup, 10)
            worker = setup.worker("worker")
            worker.wait_ready()
            for chunk in chunks[:4]:
                setup.produce(chunk)
                time.sleep(1)
            before = _count_lines(chunks[:4])
            worker.wait_until(lambda: worker.events().get("read") == before, "four chunks")
            producer = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "produce", str(chunks[4]), "--config",
                 str(setup.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while (worker.events().get("read") or 0) == before:  # the fifth is being counted
                assert time.monotonic() < deadline and producer.poll() in (None, 0)
                time.sleep(0.005)
            stopped_at = time.monotonic()
            read_at_stop = worker.events().get("read")
            kafka.port = int(kafka.bootstrap.rsplit(":", 1)[1])  # back on the same port
            kafka.stop()
            time.sleep(20)
            kafka.start()
            assert kafka.bootstrap == setup.config.kafka.bootstrap_servers
            assert producer.wait(timeout=60) == 0, producer.stderr.read()
            for chunk in chunks[5:]:
                setup.produce(chunk)
                time.sleep(1)
            worker.wait_until(lambda: worker.events().get("read") == setup.lines,
                              "every message to be accounted for")
            print(f"\nsingle broker stopped with {read_at_stop} of the "
                  f"{_count_lines(chunks[:5])} messages produced so far accounted for, "
                  f"restarted 20 s later: all "
                  f"{setup.lines} accounted for {time.monotonic() - stopped_at:.1f} s after it "
                  f"stopped; worker pid unchanged: {worker.process.poll() is None}")
            assert worker.process.poll() is None, "the worker exited"
            assert_equal_to_file(setup, worker)
            assert worker.stop(signal.SIGTERM) == 0
        finally:
            setup.close()
