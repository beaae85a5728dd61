"""The worker's Kafka topics: the input, the dead-letter topic, the bundles topic and the ledger.

Why raw bytes everywhere: a value that Faust fails to deserialize crashes the agent, and the
contract says no input may stop the engine. So the input is consumed as bytes and parsed by
:mod:`engine.decode`; the dead-letter topic receives the original bytes unchanged.

Why a bundles topic between ingest and apply: KPI state is sharded by entity
(:func:`engine.routing.routes`), so every item of one route key must reach the same partition,
whichever input partition it came from. The ingest stage sends, per input batch, one *bundle*
per target partition (many items in one message, see :mod:`streams.ledger`), with an explicit
partition :func:`partition_for_key` of each item's route key; the apply agent consumes that
topic, and the ledger table's changelog is co-partitioned with it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import faust

from engine.config import Config

#: Dead-letter headers (values are UTF-8 bytes).
HEADER_REASON = "kpi-reason"
HEADER_DETAIL = "kpi-detail"
HEADER_SOURCE_TOPIC = "kpi-source-topic"
HEADER_SOURCE_PARTITION = "kpi-source-partition"
HEADER_SOURCE_OFFSET = "kpi-source-offset"

#: Faust table (and changelog topic) holding the ledger of applied items.
LEDGER_TABLE = "ledger"


def bundles_topic_name(config: Config) -> str:
    return f"{config.worker.app_id}-bundles"


def changelog_topic_name(config: Config, table: str = LEDGER_TABLE) -> str:
    """The name Faust gives a table's changelog topic."""
    return f"{config.worker.app_id}-{table}-changelog"


def ingest_group(config: Config) -> str:
    """The consumer group of the ingest stage (the apply agent uses Faust's, ``app_id``)."""
    return f"{config.worker.app_id}-ingest"


def topic_partitions(config: Config) -> dict[str, int]:
    """``{topic: partitions}`` that the worker creates before it starts (Faust adds changelogs)."""
    n = config.topics.partitions
    return {config.topics.input: n, config.topics.dead_letter: n, bundles_topic_name(config): n}


def topic_configs(config: Config) -> dict[str, dict[str, str]]:
    """Topic configs of the topics in :func:`topic_partitions`, by name.

    Every topic gets ``[topics] min_insync_replicas``. The bundles topic is never deleted by
    time or size (``retention.ms``/``retention.bytes`` ``-1``): the ingest stage commits input
    offsets once a bundle is acknowledged, before the apply stage has applied it, so a bundle
    deleted unapplied (a worker down for longer than the broker's default week) would be an
    event lost. The apply stage reads it once; the topic grows by what was forwarded.
    """
    isr = {"min.insync.replicas": str(config.topics.min_insync_replicas)}
    return {config.topics.input: dict(isr), config.topics.dead_letter: dict(isr),
            bundles_topic_name(config): bundles_topic_config(config)}


def bundles_topic_config(config: Config) -> dict[str, str]:
    return {"min.insync.replicas": str(config.topics.min_insync_replicas),
            "retention.ms": "-1", "retention.bytes": "-1"}


def changelog_topic_config(config: Config) -> dict[str, str]:
    """Extra configs of the ledger's changelog (Faust makes it compacted)."""
    return {"min.insync.replicas": str(config.topics.min_insync_replicas)}


def partition_for_key(key: bytes, partitions: int) -> int:
    """The bundles (and ledger) partition of a route key.

    CRC-32 rather than Kafka's murmur2: the ingest stage always names the partition explicitly,
    so nothing needs Kafka's default partitioner here, and ``zlib.crc32`` costs 0.07 µs where
    aiokafka's pure-Python murmur2 costs 3 µs, per item. Changing it would move state between
    partitions, so it is fixed for an ``app_id`` like the partition count.
    """
    return zlib.crc32(key) % partitions


@dataclass(frozen=True, slots=True)
class Topics:
    """The input and dead-letter topic names (served by the ingest stage's own clients) and the
    bundles topic as Faust knows it (consumed by the apply agent)."""

    input: str
    dead_letter: str
    bundles: faust.TopicT


def declare_topics(app: faust.App, config: Config) -> Topics:
    """Declare the bundles topic on ``app`` (raw keys and values) and name the others."""
    bundles = app.topic(bundles_topic_name(config), partitions=config.topics.partitions,
                        internal=True, key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw",
                        replicas=config.topics.replication_factor,
                        config=bundles_topic_config(config))
    return Topics(input=config.topics.input, dead_letter=config.topics.dead_letter,
                  bundles=bundles)
