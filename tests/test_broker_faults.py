"""Broker faults: the worker's topics are configured to survive them, its producers ride them out.

- every topic the worker creates gets ``[topics] replication_factor`` and
  ``min_insync_replicas``; the bundles topic keeps its messages forever (input offsets are
  committed before bundles are applied, so a bundle deleted by retention would be lost);
- a send of the worker's producers survives a broker restart that outlasts aiokafka's default
  request timeout (40 s): idempotent, retried for ``DELIVERY_TIMEOUT_MS`` (opt-in ``fault``
  marker: it stops a broker of its own for 50 s).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from engine.config import ConfigError, config_from_mapping
from engine.kafka_client import ensure_topics
from engine.kafka_local import LocalKafka, free_port
from streams.kafka import new_producer
from streams.topics import bundles_topic_name, topic_configs, topic_partitions

pytestmark = pytest.mark.kafka


async def _describe(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics])
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for _code, _message, _type, name, entries in response.resources:
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found


def test_worker_topics_carry_min_insync_replicas_and_bundles_are_kept_forever(
        kafka_broker, unique_name) -> None:
    config = config_from_mapping({
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap},
        "topics": {"input": unique_name("in"), "dead_letter": unique_name("dlq"),
                   "partitions": 2, "replication_factor": 1, "min_insync_replicas": 1},
        "worker": {"app_id": unique_name("app")},
    })
    asyncio.run(ensure_topics(config.kafka, topic_partitions(config),
                              config.topics.replication_factor, topic_configs(config)))
    found = asyncio.run(_describe(kafka_broker.bootstrap, list(topic_partitions(config))))
    bundles = found[bundles_topic_name(config)]
    assert bundles["retention.ms"] == "-1" and bundles["retention.bytes"] == "-1"
    for name in topic_partitions(config):
        assert found[name]["min.insync.replicas"] == "1", name


@pytest.mark.parametrize("topics, message", [
    ({"replication_factor": 0}, "replication_factor"),
    ({"replication_factor": 3, "min_insync_replicas": 4}, "min_insync_replicas"),
    ({"min_insync_replicas": 0}, "min_insync_replicas"),
])
def test_impossible_replication_settings_are_named(topics, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({"topics": topics})


@pytest.mark.fault
def test_a_send_rides_out_a_broker_restart_longer_than_the_default_request_timeout(
        tmp_path, unique_name) -> None:
    port = free_port()
    broker = LocalKafka(tmp_path / "kafka", port=port)
    broker.start()
    try:
        config = config_from_mapping({"kafka": {"bootstrap_servers": broker.bootstrap}})
        topic = unique_name("t")
        asyncio.run(ensure_topics(config.kafka, {topic: 1}))

        async def run() -> float:
            producer = new_producer(config, "fault-test")
            await producer.start()
            try:
                await (await producer.send(topic, b"before", partition=0))
                await asyncio.to_thread(broker.stop)
                stopped = time.monotonic()
                future = await producer.send(topic, b"during", partition=0)
                await asyncio.sleep(50)  # longer than aiokafka's default 40 s
                await asyncio.to_thread(broker.start)
                metadata = await future
                assert metadata.offset == 1
                return time.monotonic() - stopped
            finally:
                await producer.stop()

        outage = asyncio.run(run())
        assert outage > 50
    finally:
        broker.stop()
