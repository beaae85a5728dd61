"""``kpi-engine demo``: the whole engine on this machine, with one command and no config.

Starts a local Kafka broker, writes a demo config, backfills recent synthetic history, starts a
worker, feeds it live traffic and (when installed) starts Prometheus with the recording rules,
then prints where to look. Ctrl-C or SIGTERM stops everything in reverse order. Everything lives
under ``--dir`` (default ``.kpi-engine/demo``), which each run starts afresh. See
:mod:`engine.demo`. Exit status: 0 after a requested stop, 1 when a part failed (the message
shows its log), 2 on a configuration or usage error, 130 when interrupted while starting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.demo import (
    BACKFILL_EVENTS_PER_DAY,
    DEFAULT_BACKFILL_DAYS,
    DEFAULT_DIR,
    DEFAULT_PROMETHEUS_PORT,
    DEFAULT_RATE,
    DEFAULT_WEB_PORT,
    Demo,
    DemoOptions,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run everything locally: Kafka, a worker, live traffic, Prometheus",
        description="Run the whole engine on this machine with no config: a local Kafka "
                    "broker, a demo config, recent synthetic history, one worker, live traffic "
                    "and, when installed, Prometheus with the recording rules; then print "
                    "where to look. Ctrl-C or SIGTERM stops everything in reverse order.")
    p.add_argument("--config", metavar="FILE.toml",
                   help="start from this config (calendar, money, targets, topics) instead of "
                        "the embedded demo defaults; Kafka and the worker's port and data "
                        "directory are always the demo's")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, metavar="DIR",
                   help=f"where the demo keeps everything (default: {DEFAULT_DIR}; "
                        "emptied at start)")
    p.add_argument("--backfill-days", type=_non_negative_float, default=DEFAULT_BACKFILL_DAYS,
                   metavar="N", help=f"days of history sent before the worker starts "
                                     f"(default: {DEFAULT_BACKFILL_DAYS}, ~{BACKFILL_EVENTS_PER_DAY} events a "
                                     "day; "
                                     "0: none)")
    p.add_argument("--rate", type=_positive_float, default=DEFAULT_RATE, metavar="R",
                   help=f"live events per second (default: {DEFAULT_RATE:g})")
    p.add_argument("--duration", type=_positive_float, metavar="S",
                   help="stop by itself S seconds after everything is up (default: run until "
                        "Ctrl-C)")
    p.add_argument("--no-prometheus", dest="prometheus", action="store_false",
                   help="do not start Prometheus even when it is installed")
    p.add_argument("--web-port", type=_port, metavar="N",
                   help=f"the worker's HTTP port (default: {DEFAULT_WEB_PORT}, or a free port "
                        "if that is taken; 0: any free port)")
    p.add_argument("--prometheus-port", type=_port, metavar="N",
                   help=f"Prometheus' port (default: {DEFAULT_PROMETHEUS_PORT}, or a free port "
                        "if that is taken; 0: any free port)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the traffic (default: 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = DemoOptions(
        directory=args.dir, config_path=args.config, backfill_days=args.backfill_days,
        rate=args.rate, duration=args.duration, prometheus=args.prometheus,
        web_port=args.web_port, prometheus_port=args.prometheus_port, seed=args.seed)
    return Demo(options).run()


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number ≥ 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, got {text}")
    return value
