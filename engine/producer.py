"""Send lines of bytes to a Kafka topic, fast, keyed by the event's entity.

Why keys: SPEC §1 asks producers to key by the entity id, so that all events of one lead, deal
or customer land on one partition in order; the engine re-keys anyway, but ordered partitions
make its work and anyone's debugging easier. Messages are sent as they are, byte for byte, even
when they are not valid events: judging them is the engine's job (it dead-letters them), and a
demo of dead-lettering needs them to arrive.

Why this shape: awaiting every send would make one round trip per message. Instead messages are
handed to aiokafka's accumulator (``send`` only waits when its buffer is full), batched with
``linger_ms``, and the delivery futures are settled in bulk; ``flush`` at the end waits for the
rest. Failures are counted, not raised, so one oversized message does not lose the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from engine.config import KafkaConfig
from engine.kafka_client import client_kwargs, ensure_topics

__all__ = ["ProduceResult", "entity_key", "send_lines"]

# The entity whose events must stay in order, per event type (SPEC §1.2, §3). Subscriptions are
# keyed by customer: "active customers" is a per-customer question; activities and spend have no
# entity of their own and are keyed by who they belong to.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "lead.created": ("lead_id",),
    "lead.qualified": ("lead_id",),
    "deal.created": ("deal_id",),
    "deal.closed": ("deal_id",),
    "subscription.started": ("customer_id", "subscription_id"),
    "subscription.cancelled": ("customer_id", "subscription_id"),
    "activity.logged": ("rep_id", "team_id"),
    "spend.recorded": ("team_id", "category"),
}
_FALLBACK_FIELDS = ("lead_id", "deal_id", "customer_id", "subscription_id", "rep_id", "team_id")

SETTLE_EVERY = 20_000  # at most this many deliveries in flight before checking them


@dataclass(slots=True)
class ProduceResult:
    """What happened to the messages: ``sent`` were acknowledged, ``failed`` were not."""

    sent: int = 0
    keyed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few failure messages


def entity_key(value: bytes) -> bytes | None:
    """The Kafka key for a message: its entity id as UTF-8, or ``None`` when it has none.

    ``None`` when the value is not a JSON object or carries no usable id; the partitioner then
    spreads such messages, which is fine for what will be dead-lettered.
    """
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    event_type = document.get("type")
    names = KEY_FIELDS.get(event_type, _FALLBACK_FIELDS) if isinstance(event_type, str) \
        else _FALLBACK_FIELDS
    for name in names:
        key = document.get(name)
        if isinstance(key, str) and key:
            return key.encode()
    return None


async def send_lines(lines: Iterable[bytes] | AsyncIterable[bytes], *, topic: str,
                     kafka_config: KafkaConfig, partitions: int | None = None,
                     linger_ms: int = 20, max_batch_size: int = 512 * 1024,
                     max_request_size: int = 4 * 1024 * 1024) -> ProduceResult:
    """Send each line as one message to ``topic``; return the counts once all are settled.

    ``partitions``: create the topic with that many partitions first if it does not exist
    (``None``: leave topic creation to the caller). ``lines`` may be an async iterable, so a
    live generator can pace itself without blocking the event loop.
    """
    if partitions is not None:
        await ensure_topics(kafka_config, {topic: partitions})
    producer = AIOKafkaProducer(**client_kwargs(kafka_config), acks="all", linger_ms=linger_ms,
                                max_batch_size=max_batch_size,
                                max_request_size=max_request_size)
    await producer.start()
    result = ProduceResult()
    pending: list[asyncio.Future] = []
    try:
        async for value in _aiter(lines):
            key = entity_key(value)
            try:
                pending.append(await producer.send(topic, value, key=key))
            except KafkaError as exc:  # e.g. larger than max_request_size: rejected locally
                _failed(result, exc)
                continue
            if key is not None:
                result.keyed += 1
            if len(pending) >= SETTLE_EVERY:  # bound memory: wait for the older half
                await asyncio.wait(pending[: SETTLE_EVERY // 2])
                pending = _settle(pending, result)
        await producer.flush()
        if pending:
            await asyncio.wait(pending)
        _settle(pending, result)
    finally:
        await producer.stop()
    return result


async def _aiter(lines: Iterable[bytes] | AsyncIterable[bytes]):
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            yield line
    else:
        for i, line in enumerate(lines):
            yield line
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the sender task drain batches


def _settle(pending: list[asyncio.Future], result: ProduceResult) -> list[asyncio.Future]:
    """Count settled deliveries; return the futures still in flight."""
    still: list[asyncio.Future] = []
    for future in pending:
        if not future.done():
            still.append(future)
            continue
        if future.cancelled():
            _failed(result, asyncio.CancelledError("delivery cancelled"))
        elif future.exception() is not None:
            _failed(result, future.exception())
        else:
            result.sent += 1
    return still


def _failed(result: ProduceResult, exc: BaseException) -> None:
    result.failed += 1
    if len(result.errors) < 5:
        result.errors.append(f"{type(exc).__name__}: {exc}")
