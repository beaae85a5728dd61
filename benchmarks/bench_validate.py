"""How fast events are decoded, against the ceiling of parsing their JSON and nothing else.

    python benchmarks/bench_validate.py [--events FILE.jsonl] [--config FILE.toml]

Why this comparison: ``kpi-engine report`` must process ≥ 200,000 events/s on one core, and
``orjson.loads`` is the part no decoder can avoid. The ratio decode / loads says how much the
contract's checks and the typed event cost on top, independent of the machine's speed.

By default the spec's example events (a realistic mix of all eight types, zones, fractions,
extra fields) are repeated to about 200,000 lines, with the example's configuration. Each
measurement runs over all lines ``--rounds`` times and the best round is reported; time is
this process's CPU time, so other processes on a shared machine disturb it less than they
would wall-clock time. Everything runs in one process so the numbers are comparable.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from engine.config import load_config
from engine.decode import Decoder, decode
from engine.event import Event
from engine.jsonl import iter_lines

EXAMPLE = Path("/work/shared/spec/examples/small")
TARGET_LINES = 200_000


def best_seconds(run: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, default=None,
                        help="events file (default: the spec example repeated to ~200k lines)")
    parser.add_argument("--config", type=Path, default=None,
                        help="engine configuration (default: the example's with the example "
                             "events, else built-in defaults)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    events_path = args.events or EXAMPLE / "events.jsonl"
    config_path = args.config or (EXAMPLE / "config.toml" if args.events is None else None)
    config = load_config(config_path)
    lines = [line for _, line in iter_lines(events_path)]
    if args.events is None:
        lines = lines * max(1, round(TARGET_LINES / len(lines)))
    count = len(lines)

    loads = orjson.loads
    decoder = Decoder(config)
    currency, max_bytes = config.money.currency, config.limits.max_event_bytes
    valid = sum(1 for line in lines if isinstance(decoder(line), Event))

    def loads_all() -> None:
        for line in lines:
            loads(line)

    def decode_all() -> None:
        for line in lines:
            decode(line, currency=currency, max_event_bytes=max_bytes)

    def decoder_all() -> None:
        for line in lines:
            decoder(line)

    with tempfile.TemporaryDirectory() as tmp:
        file_copy = os.path.join(tmp, "events.jsonl")
        with open(file_copy, "wb") as out:
            out.write(b"\n".join(lines) + b"\n")

        def file_all() -> None:
            for _, line in iter_lines(file_copy):
                decoder(line)

        results = [
            ("orjson.loads (ceiling)", best_seconds(loads_all, args.rounds)),
            ("decode(raw, currency=…, max_event_bytes=…)",
             best_seconds(decode_all, args.rounds)),
            ("Decoder(config)(raw)", best_seconds(decoder_all, args.rounds)),
            ("iter_lines(file) + Decoder", best_seconds(file_all, args.rounds)),
        ]

    print(f"{count:,} events from {events_path}{' (repeated)' if args.events is None else ''}, "
          f"{valid:,} valid; Python {sys.version.split()[0]}, best CPU time of {args.rounds} rounds")
    ceiling = results[0][1]
    for label, seconds in results:
        print(f"  {label:46} {count / seconds:>12,.0f} events/s"
              f"  {seconds / count * 1e6:6.2f} µs/event  {seconds / ceiling:5.2f}× loads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
