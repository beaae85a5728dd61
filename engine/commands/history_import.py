"""``kpi-engine import``: CRM CSV exports (deals, activities) into contract events.

Reads an export with the CRM's standard columns (:mod:`gateway.history`; ``--map`` overrides
one), maps every row with the roster and the source's stage mapping from ``[[gateway.sources]]``,
checks each event with the engine's decoder, and sends the valid ones to the input topic (or
writes them to ``--output``). Rows that cannot be imported are listed on stderr
(``line<TAB>reason``). Exit status: 0 all rows imported, 1 some rows were not, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from engine.config import ConfigError, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import", help="import CRM CSV exports (deals, activities) as contract events",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("file", metavar="EXPORT.csv")
    parser.add_argument("--crm", required=True, choices=("pipedrive", "hubspot", "salesforce"))
    parser.add_argument("--kind", required=True, choices=("deals", "activities"))
    parser.add_argument("--source", help="the [[gateway.sources]] name whose ids and stages to "
                        "use (default: the first source of that CRM, else the CRM's name)")
    parser.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                        help="read FIELD from COLUMN instead of the standard export's column")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--output", metavar="FILE.jsonl",
                        help="write the events here instead of sending them to Kafka")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from engine.event import Rejection
    from gateway.history import COLUMNS, ImportSettings, RowError, import_rows, read_csv
    from gateway.roster import attribution
    from gateway.validation import EventGate

    config = load_config(args.config)
    source = next((s for s in config.gateway.sources
                   if (args.source and s.name == args.source)
                   or (not args.source and s.kind == args.crm)), None)
    if args.source and source is None:
        raise ConfigError(f"no [[gateway.sources]] entry named {args.source!r}")
    columns = {}
    for item in args.map:
        field, _, column = item.partition("=")
        if field not in COLUMNS[args.crm][args.kind] or not column:
            raise ConfigError(f"--map {item!r}: fields are "
                              f"{', '.join(COLUMNS[args.crm][args.kind])}")
        columns[field] = column
    settings = ImportSettings(
        crm=args.crm, source=source.name if source else args.crm, kind=args.kind,
        zone=config.calendar.zone, attribution=attribution(config),
        stages=source.stage_map() if source else {}, columns=columns,
        **({"won_stages": frozenset(s.lower() for s in source.won_stages),
            "lost_stages": frozenset(s.lower() for s in source.lost_stages)}
           if source and source.won_stages else {}))
    try:
        rows = read_csv(Path(args.file).read_text(encoding="utf-8-sig"))
    except OSError as exc:
        print(f"kpi-engine import: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    gate = EventGate(config)
    lines: list[bytes] = []
    failed = 0
    for line, outcome in import_rows(rows, settings):
        if isinstance(outcome, RowError):
            failed += 1
            print(f"{line}\t{outcome}", file=sys.stderr)
            continue
        for event in outcome:
            checked = gate(event)
            if isinstance(checked, Rejection):
                failed += 1
                print(f"{line}\t{checked.reason}: {checked.detail}", file=sys.stderr)
            else:
                lines.append(checked)
    if args.output:
        Path(args.output).write_bytes(b"".join(line + b"\n" for line in lines))
        print(f"wrote {len(lines)} events from {len(rows)} rows to {args.output}"
              f"{f', {failed} rows not imported' if failed else ''}")
    else:
        from engine.producer import send_lines

        result = asyncio.run(send_lines(lines, topic=config.topics.input,
                                        kafka_config=config.kafka,
                                        partitions=config.topics.partitions))
        print(f"sent {result.sent} events from {len(rows)} rows to {config.topics.input}"
              f"{f', {failed} rows not imported' if failed else ''}")
        if result.failed:
            return 1
    return 1 if failed else 0
