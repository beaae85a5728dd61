"""Shared aiokafka helpers: one place that turns ``[kafka]`` settings into clients.

Why: the worker, the producer tools and the tests all talk to the same brokers with the same
security settings; building the keyword arguments once keeps SSL and SASL handling identical
everywhere, and topic creation explicit instead of relying on broker auto-creation.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.helpers import create_ssl_context

from engine.config import ConfigError, KafkaConfig

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
        kwargs["sasl_plain_password"] = sasl_password(kafka_config)
    return kwargs


def sasl_password(kafka_config: KafkaConfig) -> str | None:
    """The SASL password: ``sasl_password``, or the first line of ``sasl_password_file``."""
    if kafka_config.sasl_password_file is None:
        return kafka_config.sasl_password
    try:
        text = Path(kafka_config.sasl_password_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"[kafka] sasl_password_file {kafka_config.sasl_password_file}: "
                          f"{exc.strerror}") from None
    return text.splitlines()[0] if text else ""


class KafkaAccessError(RuntimeError):
    """The broker answers but refuses this client; retrying cannot help. Names the cause."""


async def check_access(kafka_config: KafkaConfig, address: str) -> None:
    """Connect to ``address`` once with the configured TLS and SASL; KafkaAccessError if the
    broker refuses the credentials, its certificate is not trusted, or the protocols differ.

    Why: aiokafka logs such failures as warnings and then reports only "Unable to bootstrap",
    so without this check a wrong password looks like a broker that is not up yet.
    """
    kwargs = client_kwargs(kafka_config)
    host, _, port = address.strip().rpartition(":")
    protocol = kafka_config.security_protocol
    try:
        conn = await asyncio.wait_for(create_conn(
            host.strip("[]") or "localhost", int(port or 9092),
            ssl_context=kwargs.get("ssl_context"), security_protocol=protocol,
            sasl_mechanism=kwargs.get("sasl_mechanism", "PLAIN"),
            sasl_plain_username=kwargs.get("sasl_plain_username"),
            sasl_plain_password=kwargs.get("sasl_plain_password"),
            request_timeout_ms=10_000), 15)
    except SaslAuthenticationFailed:
        raise KafkaAccessError(
            f"Kafka at {address} refused the credentials of SASL user "
            f"{kafka_config.sasl_username!r} ({kafka_config.sasl_mechanism}): wrong username or "
            "password ([kafka] sasl_username, sasl_password)") from None
    except ssl.SSLCertVerificationError as exc:
        raise KafkaAccessError(
            f"TLS: the certificate of the Kafka broker at {address} is not trusted "
            f"({exc.verify_message}); [kafka] ssl_cafile must name the CA that signed it") from None
    except ssl.SSLError as exc:
        raise KafkaAccessError(
            f"TLS handshake with the Kafka broker at {address} failed ({exc.reason}); does "
            f"that listener speak {protocol}?") from None
    except KafkaConnectionError as exc:
        if "closed" not in str(exc):
            raise
        raise KafkaAccessError(
            f"the Kafka broker at {address} closed the connection during the handshake: its "
            f"listener probably expects another security_protocol than {protocol}, or another "
            "SASL mechanism") from None
    conn.close()


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


async def preflight(kafka_config: KafkaConfig) -> None:
    """Fail fast, naming the cause (:class:`KafkaAccessError`), when the broker refuses this
    client's TLS or SASL settings; nothing to check for PLAINTEXT."""
    if kafka_config.security_protocol != "PLAINTEXT":
        await check_access(kafka_config, await _probe_tcp(kafka_config.bootstrap_servers))


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
            reachable = await _probe_tcp(kafka_config.bootstrap_servers)
            if kafka_config.security_protocol != "PLAINTEXT":
                await check_access(kafka_config, reachable)  # fails fast, naming the cause
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


async def _probe_tcp(bootstrap_servers: str) -> str:
    """The first bootstrap address that accepts a TCP connection; OSError if none does."""
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
        return address.strip()
    raise error
