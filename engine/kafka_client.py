"""Shared aiokafka helpers: one place that turns ``[kafka]`` settings into clients.

Why: the worker, the producer tools and the tests all talk to the same brokers with the same
security settings; building the keyword arguments once keeps SSL and SASL handling identical
everywhere, and topic creation explicit instead of relying on broker auto-creation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from engine.config import KafkaConfig

_SSL_PROTOCOLS = ("SSL", "SASL_SSL")


def client_kwargs(kafka_config: KafkaConfig) -> dict[str, Any]:
    """aiokafka keyword arguments (producer, consumer or admin) for ``kafka_config``."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka_config.bootstrap_servers,
        "client_id": kafka_config.client_id,
        "security_protocol": kafka_config.security_protocol,
    }
    if kafka_config.security_protocol in _SSL_PROTOCOLS:
        kwargs["ssl_context"] = create_ssl_context(
            cafile=kafka_config.ssl_cafile,
            certfile=kafka_config.ssl_certfile,
            keyfile=kafka_config.ssl_keyfile,
        )
    if kafka_config.sasl_mechanism:
        kwargs["sasl_mechanism"] = kafka_config.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka_config.sasl_username
        kwargs["sasl_plain_password"] = kafka_config.sasl_password
    return kwargs


def _as_config(target: str | KafkaConfig) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=target) if isinstance(target, str) else target


async def ensure_topics(kafka_config: KafkaConfig, topics: Mapping[str, int],
                        replication: int = 1,
                        configs: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Create the topics ``{name: partitions}`` that do not exist yet; return those created.
    ``configs``: topic configs by topic name (e.g. ``min.insync.replicas``).

    Idempotent: an existing topic is left as it is (its partition count is not changed, since
    repartitioning a keyed topic would move keys between partitions).
    """
    if not topics:
        return []
    admin = AIOKafkaAdminClient(**client_kwargs(kafka_config))
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication,
                      topic_configs=dict((configs or {}).get(name, {})))
             for name, partitions in topics.items()])
    finally:
        await admin.close()
    created = []
    for name, code, *message in response.topic_errors:
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:
            detail = message[0] if message and message[0] else ""
            raise for_code(code)(f"cannot create topic {name!r}: {detail}".rstrip(": "))
    return created


async def create_producer(kafka_config: KafkaConfig, **kwargs: Any) -> AIOKafkaProducer:
    """A started producer; ``kwargs`` override or extend the config (e.g. ``acks``)."""
    producer = AIOKafkaProducer(**{**client_kwargs(kafka_config), **kwargs})
    await producer.start()
    return producer


async def create_consumer(kafka_config: KafkaConfig, *topics: str,
                          **kwargs: Any) -> AIOKafkaConsumer:
    """A started consumer subscribed to ``topics``; ``kwargs`` as for aiokafka (``group_id``…)."""
    consumer = AIOKafkaConsumer(*topics, **{**client_kwargs(kafka_config), **kwargs})
    await consumer.start()
    return consumer


async def wait_for_broker(bootstrap: str | KafkaConfig, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until a metadata request listing at least one broker succeeds; return the metadata.

    Why a real request rather than an open port: a KRaft broker accepts connections before
    it has registered with its controller, and clients fail until it has.
    """
    kafka_config = _as_config(bootstrap)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            # A plain TCP probe first: aiokafka logs every refused connection as a warning.
            await _probe_tcp(kafka_config.bootstrap_servers)
            admin = AIOKafkaAdminClient(**client_kwargs(kafka_config), request_timeout_ms=5000)
            try:
                await admin.start()
                cluster = await admin.describe_cluster()
            finally:
                await admin.close()
            if cluster.get("brokers"):
                return cluster
            last_error = RuntimeError("metadata lists no brokers yet")
        except (TimeoutError, KafkaError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no Kafka broker answered at {kafka_config.bootstrap_servers} "
                               f"within {timeout:g}s (last error: {last_error!r})")
        await asyncio.sleep(0.25)


async def _probe_tcp(bootstrap_servers: str) -> None:
    """Return once any bootstrap address accepts a TCP connection; raise OSError otherwise."""
    error: OSError = ConnectionRefusedError(f"nothing listens at {bootstrap_servers}")
    for address in bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]") or "localhost", int(port or 9092)), 5)
        except (TimeoutError, OSError, ValueError) as exc:
            error = exc if isinstance(exc, OSError) else OSError(str(exc))
            continue
        writer.close()
        return
    raise error
