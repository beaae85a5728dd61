"""Standby changelog records Faust fetched reach the replicas: they survive the flow resuming
(streams.standby_flow), and a standby partition's records are never drained while it is paused
(streams.paused_fetch).

Faust clears its changelog queue whenever its flow resumes, including at the end of each
recovery, after the standby partitions were resumed and the tables' hooks ran: records of a
standby partition fetched meanwhile were lost, the consumer's position past them, and the
replica stayed behind its changelog (missing) until the owner wrote again. Seen after a zombie
worker rejoined (tests/test_cluster_faults.py, 1 run in 3). Here the real worker's Faust app,
its real changelog queue and flow control, and the real recovery's standby partitions.

Faust fetches with its live set of active partitions, and aiokafka reads an empty set as "every
partition": when the recovery paused the active changelog partitions it had read (the set
empty) and a standby partition's records came in before the recovery resumed it, they were
taken from the client, its position moved past them, and Faust dropped them. Here the real
worker's Faust consumer and the real aiokafka client against the real broker.
"""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from engine.config import config_from_mapping
from engine.kafka_client import client_kwargs
from streams.topics import LEDGER_TABLE, changelog_topic_name
from streams.worker import build_worker


def _event(tp: TP, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=tp.partition,
                                                   offset=offset))


def test_queued_standby_records_survive_the_flow_resuming(tmp_path) -> None:
    config = config_from_mapping({"worker": {"data_dir": str(tmp_path / "data"),
                                             "store": "memory://"}})
    worker = build_worker(config, ingest_in_process=True)
    app = worker.app
    topic = changelog_topic_name(config, LEDGER_TABLE)
    standby, active, gone = TP(topic, 0), TP(topic, 1), TP(topic, 2)

    async def run() -> list[tuple[int, int]]:
        queue = app.tables.changelog_queue
        app.tables.recovery.standby_tps.clear()
        app.tables.recovery.standby_tps.add(standby)
        for offset in range(3):  # fetched after the standby partitions were resumed
            for tp in (standby, active, gone):
                queue.put_nowait(_event(tp, offset))
        app.flow_control.resume()  # what Recovery.on_recovery_completed does at its end
        left = []
        while not queue.empty():
            event = queue.get_nowait()
            left.append((event.message.tp.partition, event.message.offset))
        return left

    # before: [] (every queued record cleared, the standby ones never read again)
    assert asyncio.run(run()) == [(0, 0), (0, 1), (0, 2)]


@pytest.mark.kafka
def test_a_paused_standbys_records_are_not_taken_while_no_partition_is_active(
        kafka_broker, unique_name, tmp_path) -> None:
    config = config_from_mapping({"kafka": {"bootstrap_servers": kafka_broker.bootstrap},
                                  "worker": {"data_dir": str(tmp_path / "data"),
                                             "store": "memory://"}}, os.environ)
    consumer = build_worker(config, ingest_in_process=True).app.consumer
    topic = unique_name("changelog")
    active, standby = TP(topic, 0), TP(topic, 1)

    async def run() -> tuple[list[tuple[int, int]], int]:
        kwargs = client_kwargs(config.kafka)
        admin = AIOKafkaAdminClient(**kwargs)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 2, 1)])
        finally:
            await admin.close()
        client = AIOKafkaConsumer(**kwargs, enable_auto_commit=False,
                                  auto_offset_reset="earliest")
        producer = AIOKafkaProducer(**kwargs)
        await client.start()
        await producer.start()
        try:
            client.assign([TopicPartition(*active), TopicPartition(*standby)])
            for tp in (active, standby):
                await client.position(TopicPartition(*tp))
            # Faust's consumer, its fetches served by the real client (in this loop instead
            # of the client's own thread)
            thread = consumer._thread
            thread._consumer = client

            async def call_thread(fun, *args, **kwargs):
                return await fun(*args, **kwargs)

            thread.call_thread = call_thread

            async def fetch() -> list[tuple[int, int]]:
                return [(tp.partition, message.offset)
                        async for tp, message in consumer.getmany(timeout=3.0)]

            # The recovery reads the active changelog partition (every other one is paused),
            consumer.resume_partitions({active})
            fetching = asyncio.create_task(fetch())
            await asyncio.sleep(0.3)
            # pauses it once read (no partition active now) while the fetch still waits,
            consumer.pause_partitions({active})
            # records reach the standby partition (the seek to where its replica stands),
            for value in (b"a", b"b"):
                await producer.send_and_wait(topic, value, key=b"k", partition=1)
            delivered = await fetching
            consumer.resume_partitions({standby})  # and resumes it.
            for _ in range(3):
                if len(delivered) >= 2:
                    break
                delivered += await fetch()
            return delivered, await client.position(TopicPartition(*standby))
        finally:
            await producer.stop()
            await client.stop()

    delivered, position = asyncio.run(run())
    # before: ([(1, 1)], 2): offset 0 taken from the client while its partition was paused,
    # dropped by Faust, the position past it (10 runs of 10)
    assert (delivered, position) == ([(1, 0), (1, 1)], 2)
