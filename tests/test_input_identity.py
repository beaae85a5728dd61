"""A recreated or renamed input topic is an error that says so, not a log silently skipped.

Before: Kafka drops the ingest group's committed offsets with a deleted topic, so the ingest
stage read a recreated topic from its start, and the apply stage took its first messages for
replays of the old topic's (same input partitions, offsets not above those already taken):
they were skipped without a word. The same for ``[topics] input`` pointed at another topic.
Now the ingest stage records what it read (:mod:`streams.input_identity`) and the worker
refuses to start on another log. Real broker, real ``kpi-engine worker`` for the exit status.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import replace

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.config import config_from_mapping
from streams.ingest import Ingest
from streams.input_identity import input_topic_mismatch
from streams.metrics import WorkerMetrics
from streams.topics import bundles_topic_name

pytestmark = pytest.mark.kafka


async def _admin(bootstrap: str, create: list[str] = (), delete: list[str] = ()) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if delete:
            await admin.delete_topics(list(delete))
        for _ in range(100):
            if not create:
                break
            response = await admin.create_topics([NewTopic(n, 1, 1) for n in create])
            if all(code in (0, 36) for _, code, *_ in response.topic_errors):
                break
            await asyncio.sleep(0.2)  # the deletion is still going on
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


def test_a_recreated_or_renamed_input_topic_is_an_error_at_start(
        kafka_broker, unique_name, tmp_path) -> None:
    bootstrap = kafka_broker.bootstrap
    config = config_from_mapping({
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"input": unique_name("in"), "dead_letter": unique_name("dlq"),
                   "partitions": 1},
        "worker": {"app_id": unique_name("app")},
    })
    topic = config.topics.input
    events = [orjson.dumps({"event_id": f"e{i}", "type": "lead.created", "lead_id": f"L{i}",
                            "occurred_at": "2026-01-01T00:00:00Z"}) for i in range(5)]

    async def ingest_all() -> None:
        ingest = Ingest(config, WorkerMetrics())
        await ingest.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not ingest.identity.read:
                await asyncio.sleep(0.3)
            await asyncio.sleep(0.5)
        finally:
            await ingest.stop()

    asyncio.run(_admin(bootstrap, create=[topic, config.topics.dead_letter,
                                          bundles_topic_name(config)]))
    assert asyncio.run(input_topic_mismatch(config)) is None  # nothing recorded yet
    asyncio.run(_produce(bootstrap, topic, events))
    asyncio.run(ingest_all())
    assert asyncio.run(input_topic_mismatch(config)) is None  # the same log

    # Another topic named as input: its offsets would collide with the ledger's.
    other = replace(config, topics=replace(config.topics, input=unique_name("other")))
    message = asyncio.run(input_topic_mismatch(other))
    assert message is not None and topic in message and "app_id" in message

    # The same name, a new log, longer than the old one: the old offset lies inside it.
    asyncio.run(_admin(bootstrap, delete=[topic], create=[topic]))
    asyncio.run(_produce(bootstrap, topic, [b"new-" + e for e in events * 2]))
    message = asyncio.run(input_topic_mismatch(config))
    assert message is not None and "created again" in message

    # The worker refuses to start, naming the problem (exit status 2: configuration error).
    config_path = tmp_path / "worker.toml"
    config_path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
[topics]
input = "{topic}"
dead_letter = "{config.topics.dead_letter}"
partitions = 1
[worker]
app_id = "{config.worker.app_id}"
data_dir = "{tmp_path / 'data'}"
web_port = 0
""")
    result = subprocess.run([sys.executable, "-m", "engine.cli", "worker", "--config",
                             str(config_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "created again" in result.stderr

    # Shorter than the old one: the recorded offset is past its end.
    asyncio.run(_admin(bootstrap, delete=[topic], create=[topic]))
    asyncio.run(_produce(bootstrap, topic, events[:2]))
    message = asyncio.run(input_topic_mismatch(config))
    assert message is not None and "ends at offset 2" in message
