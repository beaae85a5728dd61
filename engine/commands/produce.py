"""``kpi-engine produce FILE.jsonl``: send a file of events to Kafka, one line per message.

Why a separate command: a file made by ``generate`` (or exported from a real CRM, or a test
case) can be replayed into the live engine as often as needed. Lines go out byte for byte, even
invalid ones, because dead-lettering them is the engine's job; only blank lines are skipped and
the line terminator (``\\n``, ``\\r\\n``) is removed, as SPEC §6.3 reads files.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO

from engine.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "produce", help="send a .jsonl file to Kafka, one message per line",
        description="Send each non-blank line of FILE (bytes as they are, valid or not) as one "
                    "message to the configured input topic, keyed by the event's entity id.")
    p.add_argument("file", metavar="FILE.jsonl", help="the events file ('-' for stdin)")
    p.add_argument("--config", metavar="FILE.toml", help="engine configuration")
    p.add_argument("--topic", help="send here instead of the configured input topic")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.producer import send_lines  # aiokafka only when needed

    config = load_config(args.config)
    topic = args.topic or config.topics.input
    try:
        fh: BinaryIO = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as exc:
        print(f"kpi-engine produce: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    started = time.monotonic()
    from engine.kafka_client import KafkaAccessError

    with fh:
        try:
            result = asyncio.run(send_lines(file_lines(fh), topic=topic,
                                            kafka_config=config.kafka,
                                            partitions=config.topics.partitions))
        except KafkaAccessError as exc:
            print(f"kpi-engine produce: {exc}", file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started
    failed = f", {result.failed} failed" if result.failed else ""
    print(f"sent {result.sent} messages to {topic} ({result.keyed} keyed){failed} "
          f"in {elapsed:.1f}s")
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    return 1 if result.failed else 0


def file_lines(fh: BinaryIO) -> Iterator[bytes]:
    """The non-blank lines of ``fh`` without their terminators."""
    for line in fh:
        line = line.rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            yield line
