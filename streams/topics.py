"""The worker's Kafka topics: the input, the dead-letter topic and the internal keyed topic.

Why raw bytes everywhere: a value that Faust fails to deserialize crashes the agent, and the
contract says no input may stop the engine. So the input is consumed as bytes and parsed by
:func:`engine.decode.decode`; the dead-letter topic receives the original bytes unchanged.

Why a keyed topic: Faust writes a table record to the changelog partition of the event being
processed, and KPI state must be sharded by entity (:func:`engine.routing.routes`). The ingest
agent therefore re-publishes each valid event keyed by its route key, once per aspect, and the
apply agent consumes that topic, so every record of a route key lives in one partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from aiokafka.partitioner import murmur2

from engine.config import Config

#: Dead-letter headers (values are UTF-8 bytes).
HEADER_REASON = "kpi-reason"
HEADER_DETAIL = "kpi-detail"
HEADER_SOURCE_TOPIC = "kpi-source-topic"
HEADER_SOURCE_PARTITION = "kpi-source-partition"
HEADER_SOURCE_OFFSET = "kpi-source-offset"


def keyed_topic_name(config: Config) -> str:
    return f"{config.worker.app_id}-events-keyed"


def changelog_topic_name(config: Config, table: str = "entities") -> str:
    """The name Faust gives a table's changelog topic."""
    return f"{config.worker.app_id}-{table}-changelog"


def topic_partitions(config: Config) -> dict[str, int]:
    """``{topic: partitions}`` that the worker creates before it starts (Faust adds changelogs)."""
    n = config.topics.partitions
    return {config.topics.input: n, config.topics.dead_letter: n, keyed_topic_name(config): n}


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka and Java use) picks."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Topics:
    input: faust.TopicT
    dead_letter: faust.TopicT
    keyed: faust.TopicT


def declare_topics(app: faust.App, config: Config) -> Topics:
    """Declare the three topics on ``app``, all with raw keys and values."""
    raw = {"key_type": bytes, "value_type": bytes,
           "key_serializer": "raw", "value_serializer": "raw"}
    return Topics(
        input=app.topic(config.topics.input, **raw),
        dead_letter=app.topic(config.topics.dead_letter, **raw),
        keyed=app.topic(keyed_topic_name(config), partitions=config.topics.partitions,
                        internal=True, **raw),
    )
