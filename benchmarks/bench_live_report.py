"""The live report while a day fills up: what a worker pays for every ``/api/kpis`` answer.

    python benchmarks/bench_live_report.py [--events 600000] [--every 10000] [--rate 2000]

Why: the 30-minute soak (docs/benchmarks.md) fell behind after four minutes at 2,000 events/s
while ``/api/kpis`` was asked every 5 s, and each answer took longer as the day filled. Every
window that ends *now* (day, week, month, quarter, year to date) asked today's bucket for the
sum of its contributions before ``as_of``: a pass over every activity of the day, five times
per answer, per partition; and an activity arriving threw the cached day sum away.

What is compared, in one process on the same core and events (generated live v2 traffic,
``--rate`` events/s stamped as they would arrive): ``--events`` applied in steps of
``--every`` (5 s of traffic at 2,000/s), a report after each step, at two instants:

- ``as_of`` one microsecond *after* the newest event: the live case, now served by the day's
  cached sum, which new activities update in place (``DayBucket.max_ts``);
- ``as_of`` *at* the newest event: that one event is after the cutoff, so the day is summed
  the old way, activity by activity — the baseline, the cost every live answer had before.

CPU time of the reports only (applying is the same in both), compiled build if current.
"""

from __future__ import annotations

import argparse
import time

from engine import native
from engine.config import load_config
from engine.core import Core
from engine.report import build_report

from bench_report import DEFAULT_CONFIG
from live_events import live_events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args(argv)
    config = load_config(DEFAULT_CONFIG)
    events = live_events(config, args.events, args.rate)
    cores = {"live (after the newest event)": Core(config.calendar, config.pipeline),
             "baseline (at the newest event)": Core(config.calendar, config.pipeline)}
    spent = dict.fromkeys(cores, 0.0)
    reports = 0
    for start in range(0, len(events), args.every):
        step = events[start:start + args.every]
        newest = max(e.ts for e in events[:start + len(step)])
        for (name, core), shift in zip(cores.items(), (1, 0)):
            for event in step:
                core.apply(event)
            started = time.process_time()
            build_report([core], newest + shift, config)
            spent[name] += time.process_time() - started
        reports += 1
    live, baseline = spent.values()
    print(f"{len(events):,} events in steps of {args.every:,}, {reports} reports each; "
          f"{native.status()[1]}")
    for name, seconds in spent.items():
        print(f"  {name:<32} {seconds:8.2f} s CPU, {seconds / reports * 1000:8.1f} ms a report")
    print(f"  baseline ÷ live: {baseline / live:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
