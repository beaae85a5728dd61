"""``kpi-engine simulate-crm``: post realistic CRM webhook deliveries to a running gateway.

For every ``[[gateway.sources]]`` entry of the configuration (the gateway's own), deals are
played through their life and activities done, as Pipedrive, HubSpot or Salesforce would post
them (see :mod:`gateway.simulator`); a share is redelivered, as CRMs retry.
"""

from __future__ import annotations

import argparse
import asyncio

from engine.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate-crm", help="post realistic CRM webhook deliveries to a running gateway",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", metavar="FILE", help="the gateway's TOML configuration")
    parser.add_argument("--url", help="the gateway (default: http://[gateway] host:port)")
    parser.add_argument("--rate", type=float, default=2.0, help="deliveries per second")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--count", type=int, help="stop after this many deliveries")
    parser.add_argument("--redeliver", type=float, default=0.1,
                        help="share of deliveries sent twice (default 0.1)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--write-config", metavar="FILE.toml",
                        help="write a complete try-out configuration (pipeline stages, one "
                             "source of each CRM, a roster beside it) and exit")
    parser.add_argument("--bootstrap", default="localhost:9092",
                        help="Kafka for --write-config (default localhost:9092)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.simulator import simulate, write_demo_config

    if args.write_config:
        written = write_demo_config(args.write_config, bootstrap=args.bootstrap)
        print("wrote " + " and ".join(written))
        return 0
    config = load_config(args.config)
    url = args.url or f"http://{config.gateway.host}:{config.gateway.port}"
    result = asyncio.run(simulate(config, url, rate=args.rate, duration=args.duration,
                                  count=args.count, redeliver=args.redeliver, seed=args.seed))
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(result.statuses.items()))
    print(f"posted {result.posted} deliveries to {url} ({statuses})")
    return 0 if set(result.statuses) <= {200} else 1
