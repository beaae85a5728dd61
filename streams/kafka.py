"""The worker's own Kafka clients, beside Faust's, and its one rule for Kafka failures.

Why own clients: the ingest stage reads the input and forwards bundles, and the apply stage
writes its ledger records, with plain aiokafka clients instead of Faust's per-message stream
and table machinery, which costs more per message than all the KPI work (see
:mod:`streams.ingest`, :mod:`streams.apply`). Each stage has its own producer because aiokafka
keeps one request in flight per broker and producer: ingest and apply then never wait behind
each other's acknowledgements. ``linger_ms=0``: both stages hand over whole bundles or
records, so waiting for more would only add latency.

The rule (unchanged from the first worker): once Kafka refuses output whose input is already
taken, the process exits at once, committing nothing more. Nothing after the failed send may
reach Kafka either, or a later item could land without an earlier one; a restart redoes the
uncommitted work, and :mod:`streams.ledger` recognises what had landed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, NoReturn

from aiokafka import AIOKafkaProducer

from engine.config import Config
from engine.kafka_client import client_kwargs

log = logging.getLogger(__name__)

#: Exit status after an unrecoverable Kafka produce failure (``EX_SOFTWARE``).
EXIT_KAFKA_FAILURE = 70
#: Largest request a worker producer sends: a bundle or ledger record, or a dead letter (an
#: over-limit input message plus the dead-letter headers).
MIN_REQUEST_BYTES = 1_048_576
DEAD_LETTER_HEADROOM_BYTES = 64 * 1024
#: How long a send may wait for the broker (its leader, its acknowledgement) before it counts
#: as failed: long enough to ride out a broker restart or a leader election. aiokafka's batch
#: lifetime is its request timeout; an idempotent producer retries within it without
#: duplicating or reordering what it sent.
DELIVERY_TIMEOUT_MS = 180_000

FatalHandler = Callable[[BaseException], Any]


def exit_on_kafka_failure(exc: BaseException) -> NoReturn:
    """Stop the process now, committing nothing more; a restart redoes the uncommitted work."""
    log.critical("Kafka did not accept the worker's output (%r); exiting so that no offset "
                 "is committed for work whose effect is not durable", exc)
    logging.shutdown()
    os._exit(EXIT_KAFKA_FAILURE)


def new_producer(config: Config, client_id_suffix: str) -> AIOKafkaProducer:
    """An unstarted producer for one stage: every send acknowledged by all in-sync replicas,
    idempotent, retried for up to :data:`DELIVERY_TIMEOUT_MS`."""
    kwargs = client_kwargs(config.kafka)
    kwargs["client_id"] = f"{kwargs['client_id']}-{client_id_suffix}"
    return AIOKafkaProducer(
        **kwargs,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=DELIVERY_TIMEOUT_MS,
        linger_ms=0,
        max_request_size=max(MIN_REQUEST_BYTES,
                             config.limits.max_event_bytes + DEAD_LETTER_HEADROOM_BYTES),
    )
