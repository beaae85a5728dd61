"""``kpi-engine report``: the KPI report (SPEC §5) over a ``.jsonl`` file of events."""

from __future__ import annotations

import argparse
import sys

import orjson

from engine.config import load_config
from engine.replay import replay_file
from engine.report import build_report
from engine.table import render_table
from engine.timestamps import now_micros, parse_instant


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="compute the KPI report over a .jsonl file of events",
        description="Replay a .jsonl file of CRM events through the engine's core and print "
                    "the KPI report at --as-of (SPEC §5). Invalid lines are counted and "
                    "listed on stderr; use 'kpi-engine validate' for a full list.",
    )
    p.add_argument("--events", required=True, metavar="FILE.jsonl", help="the events file")
    p.add_argument("--as-of", metavar="RFC3339",
                   help="reference instant with a zone (default: now)")
    p.add_argument("--config", metavar="FILE.toml", help="engine configuration")
    p.add_argument("--format", choices=("json", "table"), default="json",
                   help="json: the contract's document (default); table: for people")
    p.add_argument("--out", metavar="FILE", help="write the report here instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        as_of = parse_instant(args.as_of) if args.as_of else now_micros()
    except ValueError as exc:
        print(f"kpi-engine report: --as-of: {exc}", file=sys.stderr)
        return 2
    try:
        replay = replay_file(args.events, config)
    except OSError as exc:
        print(f"kpi-engine report: cannot read {args.events}: {exc.strerror}", file=sys.stderr)
        return 2
    for line_no, rejection in replay.errors[:20]:
        print(f"line {line_no}: {rejection.reason}: {rejection.detail}", file=sys.stderr)
    if replay.invalid > 20:
        print(f"… {replay.invalid - 20} more invalid lines", file=sys.stderr)
    report = build_report([replay.core], as_of, config, replay.counts())
    if args.format == "json":
        data = orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
    else:
        data = render_table(report).encode()
    if args.out:
        with open(args.out, "wb") as fh:
            fh.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0
