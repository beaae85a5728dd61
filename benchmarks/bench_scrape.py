"""How long a Prometheus scrape of the KPI collector takes over a large state.

    python benchmarks/bench_scrape.py [--days 730] [--events FILE.jsonl] [--config FILE.toml]

Why: ``collect()`` computes every component of every report window from the cores at scrape
time (no cached gauges), so its cost grows with the state a worker holds. The target is a
scrape well under a second for about a million events of state and 60 reps: the default
generates two years of history for 5 teams of 12 reps (``engine.tooling.generator``) in process.

Reported, each as the best and the median of ``--rounds`` scrapes with the clock advancing 15 s
between scrapes as in production: ``components()`` alone, and the full scrape
(``generate_latest``: components, conversion, text exposition).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from prometheus_client import CollectorRegistry, generate_latest

from engine.calendar import to_micros
from engine.collector import KpiCollector
from engine.components import components
from engine.config import load_config
from engine.core import Core
from engine.decode import decode
from engine.event import MICRO, Event
from engine.jsonl import iter_lines


def _timed(fn: Callable[[int], object], rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        gc.collect()
        started = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - started)
    return out


def _summary(seconds: list[float]) -> str:
    return f"best {min(seconds) * 1000:.0f} ms, median {statistics.median(seconds) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", help="a .jsonl file (default: generate --days of history)")
    parser.add_argument("--days", type=float, default=730, help="days of generated history")
    parser.add_argument("--config", help="engine configuration (time zone, currency)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    config = load_config(args.config)
    currency, max_bytes = config.money.currency, config.limits.max_event_bytes
    core = Core(config.calendar)
    started = time.perf_counter()
    if args.events:
        lines = (raw for _, raw in iter_lines(args.events))
        as_of = None
    else:
        from engine.tooling.generator import GeneratorSettings, history_lines
        end = datetime.now(timezone.utc).replace(microsecond=0)
        settings = GeneratorSettings(timezone=config.calendar.timezone, currency=currency)
        lines = history_lines(settings, end - timedelta(days=args.days), end)
        as_of = to_micros(end)
    applied = latest = 0
    for raw in lines:
        event = decode(raw, currency=currency, max_event_bytes=max_bytes)
        if type(event) is Event and core.apply(event):
            applied += 1
            latest = max(latest, event.ts)
    if as_of is None:
        as_of = latest + MICRO
    print(f"state: {applied} events, {len(core.rep_first)} reps, {len(core.team_first)} teams, "
          f"{len(core.customers)} customers, {len(core.deals)} deals "
          f"(built in {time.perf_counter() - started:.0f} s)")

    def clock_at(i: int) -> int:
        return as_of + i * 15 * MICRO

    first = time.perf_counter()
    comps = components([core], core.calendar, as_of)
    print(f"first scrape (month sums not cached yet): {(time.perf_counter() - first) * 1000:.0f} ms"
          f", {len(comps)} components")
    print("components(): " + _summary(
        _timed(lambda i: components([core], core.calendar, clock_at(i + 1)), args.rounds)))
    now = [as_of]
    registry = CollectorRegistry()
    KpiCollector(lambda: [core], core.calendar, config, clock=lambda: now[0], registry=registry)
    size = len(generate_latest(registry))

    def scrape(i: int) -> None:
        now[0] = clock_at(i + args.rounds + 1)
        generate_latest(registry)

    print(f"full scrape ({size / 1e6:.1f} MB of text): " + _summary(_timed(scrape, args.rounds)))


if __name__ == "__main__":
    main()
