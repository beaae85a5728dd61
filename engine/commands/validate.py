"""``kpi-engine validate FILE.jsonl``: check events against the contract without computing KPIs.

Why a separate command: CRM integrators need a quick, scriptable answer to "would the engine
accept what we produce?", with the same reason codes the live engine puts on the dead-letter
topic. The clock checks of the live engine (``future_timestamp``, ``too_late``) depend on when
an event arrives, so they are not applied here.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.config import load_config
from engine.decode import Decoder
from engine.event import Rejection
from engine.jsonl import iter_lines

OUTPUT_FORMAT = """\
output:
  stdout: one line per invalid event, tab-separated:
      LINE<TAB>REASON<TAB>DETAIL
    LINE is the physical line number (from 1; blank lines are skipped but counted),
    REASON a reason code (malformed_json, not_an_object, unknown_type, missing_field,
    invalid_field, unsupported_schema_version, currency_mismatch, too_large),
    DETAIL a human-readable explanation naming the field (never contains a tab or newline).
  stderr: a final summary "N lines, M invalid" (N counts non-blank lines).

exit status:
  0 every event is valid, 1 at least one is invalid,
  2 the file cannot be read or the configuration is invalid.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check an events file against the event contract",
        description="Check every event of a .jsonl file (one JSON object per line) against "
                    "the event contract, with the reporting currency and size limit from "
                    "the configuration. Nothing is computed.",
        epilog=OUTPUT_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("events", metavar="FILE.jsonl", help="the events file to check")
    parser.add_argument("--config", metavar="FILE.toml", default=None,
                        help="engine configuration (default: $KPI_ENGINE_CONFIG, else built-in "
                             "defaults); sets [money] currency and [limits] max_event_bytes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    decoder = Decoder(load_config(args.config))
    try:
        lines = iter_lines(args.events)
    except OSError as exc:
        print(f"kpi-engine validate: cannot read {args.events}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2

    read = invalid = 0
    out = sys.stdout
    try:
        for number, line in lines:
            read += 1
            result = decoder(line)
            if type(result) is Rejection:
                invalid += 1
                out.write(f"{number}\t{result.reason}\t{_one_line(result.detail)}\n")
        out.flush()
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # e.g. piped into `head`: stop quietly
            _silence_stdout()
            return 1
        print(f"kpi-engine validate: error reading {args.events}: {exc}", file=sys.stderr)
        return 2
    print(f"{read} lines, {invalid} invalid", file=sys.stderr)
    return 1 if invalid else 0


def _one_line(detail: str) -> str:
    """Details never hold tabs or newlines today; keep the TSV well-formed if one ever does."""
    if "\t" in detail or "\n" in detail or "\r" in detail:
        return detail.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    return detail


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
