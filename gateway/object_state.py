"""Per-object CRM state, kept in a compacted Kafka topic and read back at start.

Why: HubSpot sends one property per delivery, but a ``deal.created`` needs the owner and a
``deal.closed`` the owner and the amount. The gateway assembles each object from its changes;
that state must survive a restart and be shared by gateways behind a load balancer, so it
lives in Kafka (key: ``<source>|<object type>|<object id>``, value: the JSON state, the latest
per key kept by compaction). A gateway reads the whole topic at start; while running it also
follows the topic, so another gateway's writes reach it. Within one gateway, writes go out
with the events they explain and enter memory only once Kafka has acknowledged them.
"""

from __future__ import annotations

import asyncio
import copy
import contextlib
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.config import Config
from engine.kafka_client import client_kwargs

log = logging.getLogger(__name__)


class ObjectStateStore:
    """``get(key)`` the latest acknowledged state; :meth:`load` reads the topic to its end."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topic = config.gateway.state_topic
        self.states: dict[str, dict[str, Any]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._follow: asyncio.Task | None = None

    def waiting(self) -> dict[str, int]:
        """Objects per source whose events wait for an owner (a creation, a close, a qualification)."""
        counts: dict[str, int] = {}
        for key, state in self.states.items():
            created_waits = state.get("created_at") is not None and not state.get(
                "created_emitted", True) and key.split("|")[1] == "deal"
            if created_waits or state.get("pending"):
                source = key.split("|", 1)[0]
                counts[source] = counts.get(source, 0) + 1
        return counts

    def get(self, key: str) -> dict[str, Any] | None:
        return self.states.get(key)

    def put(self, key: str, state: dict[str, Any]) -> None:
        self.states[key] = state

    async def load(self) -> int:
        """Read every record up to the current end; then keep following. Returns the count."""
        consumer = AIOKafkaConsumer(**client_kwargs(self.config.kafka), enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        self._consumer = consumer
        partitions = [TopicPartition(self.topic, p)
                      for p in sorted(await _partitions(consumer, self.topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        count = 0
        while await _behind(consumer, partitions, ends):
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    self._apply(record.key, record.value)
                    count += 1
        self._follow = asyncio.create_task(self._follow_topic())
        return count

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            self.states.pop(key.decode(), None)
        else:
            name = key.decode()
            state = orjson.loads(value)
            current = self.states.get(name)
            # Our own writes come back later: never step back to an older version of a key.
            if current is None or state.get("v", 0) >= current.get("v", 0):
                self.states[name] = state

    async def _follow_topic(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    self._apply(record.key, record.value)

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follow
        if self._consumer is not None:
            await self._consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions (a metadata request first: the consumer knows none yet)."""
    cluster = await consumer._client.fetch_all_metadata()
    return cluster.partitions_for_topic(topic) or {0}


async def _behind(consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                  ends: dict[TopicPartition, int]) -> bool:
    for tp in partitions:
        if await consumer.position(tp) < ends[tp]:
            return True
    return False


class StateOverlay:
    """Copies of the objects a delivery reads; all are written back to Kafka (each with its
    version moved on), then committed to memory once Kafka acknowledged them."""

    def __init__(self, store: ObjectStateStore | None) -> None:
        self.store = store
        self.changed: dict[str, dict] = {}
        self.ignored = 0

    def get(self, key: str) -> dict:
        if key not in self.changed:
            current = self.store.get(key) if self.store is not None else None
            self.changed[key] = copy.deepcopy(current) if current else {
                "v": 0, "created_at": None, "created_emitted": False, "props": {}, "pending": []}
        return self.changed[key]

    def records(self) -> list[tuple[bytes, bytes]]:
        out = []
        for key, state in self.changed.items():
            state["v"] = state.get("v", 0) + 1
            out.append((key.encode(), orjson.dumps(state)))
        return out

    def commit(self) -> None:
        if self.store is not None:
            for key, state in self.changed.items():
                self.store.put(key, state)
