"""``kpi-engine gateway``: receive CRM webhooks and produce contract events to Kafka.

Serves one path per ``[[gateway.sources]]`` entry (contract events, Pipedrive, HubSpot,
Salesforce; see :mod:`gateway`), answering only once Kafka has acknowledged. Stops cleanly on
SIGTERM or SIGINT. Exit status: 0 after a clean stop, 1 when Kafka cannot be reached at start,
2 on a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace

from engine.config import load_config

BROKER_WAIT_SECONDS = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway", help="receive CRM webhooks (Pipedrive, HubSpot, Salesforce) into Kafka",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--host", help="listen address (overrides [gateway] host)")
    parser.add_argument("--port", type=int, help="listen port (overrides [gateway] port)")
    parser.add_argument("--log-level", default="warning",
                        choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.host or args.port is not None:
        config = replace(config, gateway=replace(
            config.gateway, host=args.host or config.gateway.host,
            port=config.gateway.port if args.port is None else args.port))
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.gateway.sources:
        print("kpi-engine gateway: no [[gateway.sources]] configured", file=sys.stderr)
        return 2
    return asyncio.run(_main(config))


async def _main(config) -> int:
    from engine.kafka_client import wait_for_broker
    from gateway.server import serve

    try:
        await wait_for_broker(config.kafka, timeout=BROKER_WAIT_SECONDS)
    except TimeoutError as exc:
        print(f"kpi-engine gateway: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(config, ready=ready, stop=stop))
    await ready.wait()
    paths = ", ".join(f"{s.name} ({s.kind}) at {s.path}" for s in config.gateway.sources)
    print(f"gateway listening on http://{config.gateway.host}:{config.gateway.port}: {paths}",
          flush=True)
    await task
    return 0
