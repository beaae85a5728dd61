"""The gateway's producer: events, dead letters and state records, acknowledged or refused.

Why one awaited batch per delivery: the gateway answers 2xx only once Kafka has acknowledged
everything a delivery produced (idempotent producer, ``acks=all``), so an accepted delivery
cannot be lost; when Kafka does not acknowledge within ``[gateway] kafka_timeout_seconds`` the
gateway answers 503 and the CRM retries. A retry produces the same event ids, so a send that
did land after all is counted once by the engine.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from engine.config import Config
from engine.kafka_client import client_kwargs, ensure_topics

log = logging.getLogger(__name__)

HEADER_REASON = "kpi-reason"  # the same headers as the worker's dead letters (README)
HEADER_DETAIL = "kpi-detail"
HEADER_SOURCE = "kpi-gateway-source"
HEADER_DETAIL_MAX = 1000


class KafkaUnavailable(RuntimeError):
    """Kafka did not acknowledge in time: the gateway answers 503 with Retry-After."""


@dataclass(slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


def dead_letter(topic: str, source: str, reason: str, detail: str, original: bytes) -> Record:
    """A dead letter in the worker's format: the original bytes plus ``kpi-*`` headers."""
    return Record(topic, None, original, [
        (HEADER_REASON, reason.encode()),
        (HEADER_DETAIL, detail[:HEADER_DETAIL_MAX].encode()),
        (HEADER_SOURCE, source.encode()),
    ])


class Publisher:
    """A started idempotent producer; :meth:`publish` returns once all records are acked."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.timeout = config.gateway.kafka_timeout_seconds
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await ensure_topics(self.config.kafka, {
            self.config.topics.input: self.config.topics.partitions,
            self.config.topics.dead_letter: self.config.topics.partitions,
        })
        await ensure_compacted_topic(self.config, self.config.gateway.state_topic)
        self.producer = AIOKafkaProducer(
            **client_kwargs(self.config.kafka), acks="all", enable_idempotence=True,
            linger_ms=2, request_timeout_ms=max(int(self.timeout * 1000), 1000))
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def publish(self, records: list[Record]) -> None:
        """Send ``records`` and wait for every acknowledgement; raise :class:`KafkaUnavailable`."""
        if not records:
            return
        assert self.producer is not None, "publisher not started"
        try:
            await asyncio.wait_for(self._send_all(records), self.timeout)
        except (KafkaError, TimeoutError) as exc:
            log.warning("Kafka did not acknowledge %d records: %r", len(records), exc)
            raise KafkaUnavailable(str(exc)) from None

    async def _send_all(self, records: list[Record]) -> None:
        assert self.producer is not None
        futures = [await self.producer.send(r.topic, r.value, key=r.key, headers=r.headers)
                   for r in records]
        await asyncio.gather(*futures)


async def ensure_compacted_topic(config: Config, topic: str) -> None:
    """Create ``topic`` with ``cleanup.policy=compact`` unless it exists."""
    admin = AIOKafkaAdminClient(**client_kwargs(config.kafka))
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(
            topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    for _name, code, *_rest in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise KafkaError(f"cannot create the gateway state topic {topic!r} (error {code})")
