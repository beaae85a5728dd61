"""The Faust application object of the live worker, built from a :class:`~engine.config.Config`.

Why a factory and nothing else here: the app is configuration only (broker, store, web server,
guarantees); topics, tables, agents, services and views are attached by :mod:`streams.worker`.
A function rather than a module-level global lets tests and tools build several independent
apps in one process.

Settings that matter for correctness:

- ``processing_guarantee`` stays ``at_least_once``: Faust's ``exactly_once`` is unreliable in
  0.15.x, so redelivery is expected and made harmless by the ledger (every applied item carries
  the input partition and offset it came from; see :mod:`streams.ledger`).
- ``web_tables_enabled`` is off: the ``/table`` endpoints would expose raw entity rows.
- the consumer starts at ``earliest`` for a new group, so the first start reads the whole input.

Settings that matter for security (issue 12, docs/security.md):

- Faust reads its settings from environment variables too (``WEB_BIND``,
  ``APP_WEB_TABLES_ENABLED``, ``APP_DEBUG``…) and lets them win over the arguments given here.
  The app gets an empty environment (``env={}``), so only the engine's configuration
  (``KPI_*``) decides.
- Faust's own pages (router, tables, graph, statistics) are off, and the access middleware
  (:mod:`streams.access`) answers 404 for every path that is not an engine endpoint anyway.
- ``[web_tls]`` gives the server its certificate; ``[auth]`` its tokens.
"""

from __future__ import annotations

import faust

from engine.config import Config, KafkaConfig, validate_exposure
from engine.kafka_client import client_kwargs, sasl_password
from engine.security.store import TokenStore
from engine.security.tls import server_context
from streams.access import access_middleware
from streams.membership import instance_id

#: Faust's own producer carries none of the worker's data (the stages have their own,
#: :mod:`streams.kafka`); a short linger is right for whatever Faust sends itself.
PRODUCER_LINGER_MS = 5
#: How long the group waits for a worker that stopped answering before its partitions go to
#: the others (Faust: 60 s). With static membership (streams/membership.py) a restarted worker
#: is back before that; this bounds the takeover of a worker that is gone (or stopped cleanly:
#: a static member does not leave its group), while heartbeats (every 3 s, from Faust's
#: consumer thread) keep a busy worker's session alive.
SESSION_TIMEOUT_SECONDS = 20.0


def broker_url(kafka: KafkaConfig) -> str:
    """``kafka://host:port;host2:port`` from the comma-separated bootstrap list."""
    hosts = [h.strip() for h in kafka.bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"kafka://{h}" for h in hosts)


def broker_credentials(kafka: KafkaConfig) -> faust.auth.Credentials | None:
    """Faust credentials equivalent to what :func:`engine.kafka_client.client_kwargs` builds."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    ssl_context = client_kwargs(kafka).get("ssl_context")
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=sasl_password(kafka),
        ssl_context=ssl_context,  # SASL_SSL when given, SASL_PLAINTEXT otherwise
        mechanism=kafka.sasl_mechanism,
    )


def create_app(config: Config, tokens: TokenStore | None = None) -> faust.App:
    """A new, unstarted ``faust.App`` configured from ``config``.

    Raises :class:`~engine.config.ConfigError` when the web server would be reachable beyond
    loopback without tokens, or a TLS or tokens file cannot be used. ``tokens`` defaults to a
    store over ``config.auth``.
    """
    worker = config.worker
    validate_exposure(config)
    store = tokens if tokens is not None else TokenStore(config.auth)
    return faust.App(
        worker.app_id,
        env={},  # Faust's own environment variables must not override the engine's settings
        broker=broker_url(config.kafka),
        broker_credentials=broker_credentials(config.kafka),
        broker_client_id=config.kafka.client_id,
        store=worker.store,
        datadir=worker.data_dir,
        web_bind=worker.web_host,
        web_host=worker.web_host,
        web_port=worker.web_port,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        debug=False,
        web_ssl_context=server_context(config.web_tls),
        web_application_options={"middlewares": [
            access_middleware(store, https=config.web_tls.enabled)]},
        topic_partitions=config.topics.partitions,
        topic_replication_factor=config.topics.replication_factor,
        consumer_group_instance_id=instance_id(config),
        table_standby_replicas=config.worker.standby_replicas,
        broker_session_timeout=SESSION_TIMEOUT_SECONDS,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=PRODUCER_LINGER_MS,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
