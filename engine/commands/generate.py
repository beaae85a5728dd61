"""``kpi-engine generate``: synthetic CRM events, as history or as a live stream.

Why: demos, load tests and dashboards need realistic traffic without a CRM. History mode writes
every event of a date range in event-time order (reproducible: same seed and arguments, same
bytes); live mode (``--rate``) stamps events with the wall clock and paces them, for watching
the engine and Grafana move. Time zone, currency and pipeline stages come from the engine
config, so generated events are valid for the engine that will read them: with
``[[pipeline.stages]]`` configured the traffic is v2 (deals carry a stage and an expected close
date, and ``deal.updated`` events move them), without it the v1 traffic of the same seed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import BinaryIO
from zoneinfo import ZoneInfo

from engine.config import Config, load_config
from engine.tooling.generator import history_lines, live_lines, scale_for_events, settings_for

DEFAULT_DAYS = 30
WRITE_BATCH = 10_000


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="write synthetic CRM events (history or a live stream) as JSON lines",
        description="Simulate a sales team's CRM: leads, qualification, deals, closes, "
                    "subscriptions, activities and spend; with [[pipeline.stages]] in the config "
                    "also stage moves, close-date slips, amount and owner changes and re-opens "
                    "(deal.updated). History mode (default: the last "
                    f"{DEFAULT_DAYS} days) writes a date range in event-time order; --rate "
                    "streams events stamped with the wall clock. Time zone, currency and stages "
                    "come from the config.")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--id-prefix", default="", metavar="TEXT",
                   help="prefix every event and entity id (e.g. 'live-' for a live stream "
                        "next to a backfill made with the same seed, whose ids it would repeat)")
    p.add_argument("--config", metavar="FILE.toml", help="engine configuration")
    p.add_argument("--teams", type=_positive_int, default=5, help="number of teams (default: 5)")
    p.add_argument("--reps-per-team", type=_positive_int, default=12,
                   help="reps in each team (default: 12)")
    history = p.add_argument_group("history mode")
    history.add_argument("--days", type=_positive_float,
                         help=f"the N days up to now (default: {DEFAULT_DAYS})")
    history.add_argument("--from", dest="start", metavar="DATE",
                         help="range start: YYYY-MM-DD (local midnight) or an RFC 3339 instant")
    history.add_argument("--to", dest="end", metavar="DATE", help="range end, exclusive")
    history.add_argument("--events", type=_positive_int, metavar="N",
                         help="size the range to roughly N events (default: ~23 per rep and day)")
    live = p.add_argument_group("live mode")
    live.add_argument("--rate", type=_positive_float, metavar="R",
                      help="stream R events per second, stamped now, until stopped")
    live.add_argument("--count", type=_positive_int, metavar="N", help="stop after N lines")
    live.add_argument("--duration", type=_positive_float, metavar="S",
                      help="stop after S seconds")
    noise = p.add_argument_group("noise, for demos of de-duplication and dead-lettering")
    noise.add_argument("--duplicates", type=_fraction, default=0.0, metavar="F",
                       help="re-send this fraction of lines verbatim a little later")
    noise.add_argument("--invalid", type=_fraction, default=0.0, metavar="F",
                       help="add this fraction of invalid messages")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", metavar="FILE", help="write to FILE (default: stdout)")
    out.add_argument("--kafka", action="store_true",
                     help="send to the configured input topic ([topics] input, [kafka])")
    p.add_argument("--topic", help="with --kafka: this topic instead of the configured one")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problem = _check_arguments(args)
    if problem:
        print(f"kpi-engine generate: {problem}", file=sys.stderr)
        return 2
    settings = settings_for(
        config, seed=args.seed, teams=args.teams, reps_per_team=args.reps_per_team,
        duplicates=args.duplicates, invalid=args.invalid, id_prefix=args.id_prefix)
    if args.rate is not None:
        items = _limited(live_lines(settings, args.rate), args.count, args.duration)
        return _send(args, config, paced=items)
    try:
        start, end = _history_range(args, config.calendar.timezone)
    except ValueError as exc:
        print(f"kpi-engine generate: {exc}", file=sys.stderr)
        return 2
    if args.events is not None:
        settings = replace(settings, scale=scale_for_events(settings, start, end, args.events))
    return _send(args, config, lines=history_lines(settings, start, end))


def _check_arguments(args: argparse.Namespace) -> str | None:
    if args.topic and not args.kafka:
        return "--topic needs --kafka"
    if args.rate is not None:
        if args.days is not None or args.start or args.end or args.events is not None:
            return "--rate (live mode) does not combine with --days, --from, --to or --events"
        return None
    if args.count is not None or args.duration is not None:
        return "--count and --duration apply to live mode (--rate)"
    if (args.start is None) != (args.end is None):
        return "--from and --to go together"
    if args.start is not None and args.days is not None:
        return "use either --days or --from/--to"
    return None


def _history_range(args: argparse.Namespace, zone: str) -> tuple[datetime, datetime]:
    if args.start is not None:
        start, end = _parse_day_or_time(args.start, zone), _parse_day_or_time(args.end, zone)
        if end <= start:
            raise ValueError("--to must be after --from")
        return start, end
    end = datetime.now(timezone.utc).replace(microsecond=0)
    return end - timedelta(days=args.days or DEFAULT_DAYS), end


def _parse_day_or_time(text: str, zone: str) -> datetime:
    """``YYYY-MM-DD`` is local midnight in ``zone``; an instant without offset is local too."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date or RFC 3339 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(zone))


def _limited(items: Iterator[tuple[float, bytes]], count: int | None,
             duration: float | None) -> Iterator[tuple[float, bytes]]:
    """Live items up to ``count`` lines or until ``duration`` seconds from now."""
    stop_at = time.time() + duration if duration is not None else None
    for sent, (due, line) in enumerate(items):
        if (count is not None and sent >= count) or (stop_at is not None and due >= stop_at):
            return
        yield due, line


# --- sinks --------------------------------------------------------------------------------------


def _send(args: argparse.Namespace, config: Config, *,
          lines: Iterable[bytes] | None = None,
          paced: Iterator[tuple[float, bytes]] | None = None) -> int:
    started = time.monotonic()
    if args.kafka:
        return _send_kafka(args, config, lines if lines is not None else _apaced(paced))
    target = args.out or "stdout"
    try:
        with _open_output(args.out) as fh:
            written = _write(fh, lines) if lines is not None else _write_paced(fh, paced)
    except BrokenPipeError:  # e.g. `| head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    elapsed = time.monotonic() - started
    print(f"kpi-engine generate: {written} lines to {target} in {elapsed:.1f}s "
          f"({written / max(elapsed, 1e-9):,.0f}/s)", file=sys.stderr)
    return 0


def _open_output(path: str | None) -> BinaryIO:
    if path is None:
        return os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    return open(path, "wb")


def _write(fh: BinaryIO, lines: Iterable[bytes]) -> int:
    written, batch = 0, []
    for line in lines:
        batch.append(line)
        if len(batch) >= WRITE_BATCH:
            fh.write(b"\n".join(batch) + b"\n")
            written += len(batch)
            batch = []
    if batch:
        fh.write(b"\n".join(batch) + b"\n")
        written += len(batch)
    return written


def _write_paced(fh: BinaryIO, items: Iterator[tuple[float, bytes]]) -> int:
    """Write each line at its due time; flush before waiting, so readers see lines promptly."""
    written = 0
    for due, line in items:
        delay = due - time.time()
        if delay > 0.001:
            fh.flush()
            time.sleep(delay)
        fh.write(line + b"\n")
        written += 1
    return written


async def _apaced(items: Iterator[tuple[float, bytes]]) -> AsyncIterator[bytes]:
    for due, line in items:
        delay = due - time.time()
        if delay > 0.001:
            await asyncio.sleep(delay)
        yield line


def _send_kafka(args: argparse.Namespace, config: Config, lines) -> int:
    from engine.producer import send_lines  # aiokafka only when needed

    topic = args.topic or config.topics.input
    started = time.monotonic()
    result = asyncio.run(send_lines(lines, topic=topic, kafka_config=config.kafka,
                                    partitions=config.topics.partitions))
    elapsed = time.monotonic() - started
    failed = f", {result.failed} failed" if result.failed else ""
    print(f"kpi-engine generate: sent {result.sent} messages to {topic} in {elapsed:.1f}s"
          f"{failed}", file=sys.stderr)
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    return 1 if result.failed else 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text}")
    return value
