"""``kpi-engine worker``: run the live worker (Kafka in, KPI state, HTTP endpoints).

Creates the input, dead-letter and bundles topics first (Faust creates its changelog topic
itself), then runs the Faust worker until SIGTERM or SIGINT, on which it stops cleanly:
in-flight batches finish, offsets are committed and the local table files are marked
reusable (see :mod:`streams.worker`). Exit status: 0 after a clean stop, 1 when the worker
failed (e.g. no broker), 2 on a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace

from engine.config import Config, load_config

BROKER_WAIT_SECONDS = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker", help="run the live worker (Kafka in, KPIs at /api/kpis and /metrics)",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--web-port", type=int, metavar="N",
                        help="HTTP port (overrides [worker] web_port)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="local state directory (overrides [worker] data_dir)")
    parser.add_argument("--log-level", default="warning",
                        choices=("debug", "info", "warning", "error"),
                        help="log level (default: warning)")
    parser.set_defaults(func=run)


async def sharding_mismatch(config: Config) -> str | None:
    """Why the existing bundles or ledger topic cannot serve ``[topics] partitions``, if so.

    State is sharded by partition: with another partition count, route keys would map to
    other partitions than those holding their records, so the worker must not start.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    from engine.kafka_client import client_kwargs
    from streams.topics import bundles_topic_name, changelog_topic_name

    expected = config.topics.partitions
    admin = AIOKafkaAdminClient(**client_kwargs(config.kafka))
    await admin.start()
    try:
        # Describe only topics that exist: a metadata request for a missing topic can make a
        # broker with auto-creation enabled create it, with the broker's default partitions.
        existing = set(await admin.list_topics())
        names = [name for name in (bundles_topic_name(config), changelog_topic_name(config))
                 if name in existing]
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    for topic in described:
        count = len(topic["partitions"])
        if topic["error_code"] == 0 and count != expected:
            return (f"topic {topic['topic']} has {count} partitions but [topics] partitions "
                    f"is {expected}; KPI state is sharded by partition, so the count cannot "
                    "change for an existing app_id (use a new [worker] app_id)")
    return None


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    worker_section = config.worker
    if args.web_port is not None:
        worker_section = replace(worker_section, web_port=args.web_port)
    if args.data_dir is not None:
        worker_section = replace(worker_section, data_dir=args.data_dir)
    config = replace(config, worker=worker_section)

    # Imported here: Faust is heavy, and the file commands do not need it.
    import faust

    from engine.kafka_client import ensure_topics, wait_for_broker
    from streams.heap import HeapKeeper
    from streams.local_state import local_state_problem
    from streams.topics import topic_configs, topic_partitions
    from streams.worker import build_worker

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(wait_for_broker(config.kafka, BROKER_WAIT_SECONDS))
        loop.run_until_complete(ensure_topics(config.kafka, topic_partitions(config),
                                              config.topics.replication_factor,
                                              topic_configs(config)))
        mismatch = loop.run_until_complete(sharding_mismatch(config))
        if not mismatch:
            from streams.input_identity import input_topic_mismatch
            mismatch = loop.run_until_complete(input_topic_mismatch(config))
    except Exception as exc:
        print(f"kpi-engine worker: cannot prepare Kafka: {exc}", file=sys.stderr)
        loop.close()
        return 1
    if mismatch:
        print(f"kpi-engine worker: configuration error: {mismatch}", file=sys.stderr)
        loop.close()
        return 2

    HeapKeeper.configure()
    worker = build_worker(config, log_level=args.log_level.upper())
    worker.prepare_local_state(
        lambda tables: loop.run_until_complete(local_state_problem(config, tables)))
    faust_worker = faust.Worker(worker.app, loglevel=args.log_level, quiet=True, loop=loop,
                                redirect_stdouts=False)
    faust_worker.spinner = None  # a terminal progress spinner only garbles logs
    code: int
    try:
        faust_worker.execute_from_commandline()
        code = 0  # pragma: no cover (execute_from_commandline always exits)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code == 0 and worker.app.crash_reason is None:
        worker.mark_clean_stop()
    else:
        code = code or 1
    logging.shutdown()
    return code
