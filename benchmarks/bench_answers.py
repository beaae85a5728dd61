"""What an answer costs the event loop: computed on it, or in a forked child.

    python benchmarks/bench_answers.py [--events 1000000] [--answers 10] [--rate 2000]

Why: a worker applies rounds and answers ``/api/kpis`` and ``/metrics`` on one event loop. The
30-minute soak (docs/benchmarks.md) showed that with millions of events in the current windows
an answer costs seconds, during which nothing is applied (in session 4 the apply stage fell
behind for good). :mod:`streams.forked` computes it in a forked child instead. This measures
both ways side by side, in one process, on the same cores: ``--events`` live v2 events (all
"today", as in the soak), four partitions, then ``--answers`` reports and metrics expositions
each way, while a task standing in for the apply agent wakes every millisecond.

Reported per way: the answer's latency, the longest stall of the loop (the stand-in's worst
lateness) and the share of the time the loop was free; for the child, also the fork itself
and the memory it copied (its private pages when done). Compiled build if current.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time

import orjson

from engine import native
from engine.calendar import Calendar
from engine.collector import KpiCollector
from engine.config import load_config
from engine.core import Core
from engine.report import build_report
from engine.view import warm_sums
from streams.answers import in_process
from streams.forked import run_forked

from bench_report import DEFAULT_CONFIG
from live_events import live_events

PARTITIONS = 4
TICK_SECONDS = 0.001


def private_mib() -> float:
    with open("/proc/self/smaps_rollup") as fh:
        kb = sum(int(line.split()[1]) for line in fh
                 if line.startswith(("Private_Dirty:", "Private_Clean:")))
    return kb / 1024


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


COPIED = b"\n#copied-mib="


async def measure(runner, computations) -> dict:
    """Run each computation through ``runner`` while a 1 ms ticker stands in for the apply
    agent; the latencies, the ticker's worst lateness and the loop's free share."""
    stalls: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(TICK_SECONDS)
            now = time.perf_counter()
            stalls.append(now - last - TICK_SECONDS)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    stalls.clear()
    latencies = []
    started = time.perf_counter()
    copied = []
    for compute in computations:
        t = time.perf_counter()
        body = await runner(compute)
        latencies.append(time.perf_counter() - t)
        copied.append(float(body.rpartition(COPIED)[2]))
    elapsed = time.perf_counter() - started
    stop = True
    await task
    blocked = sum(s for s in stalls if s > 0.005)  # lateness beyond scheduling noise
    return {"latency_p50": statistics.median(latencies), "latency_max": max(latencies),
            "stall_max": max(stalls, default=0.0), "free": max(0.0, 1 - blocked / elapsed),
            "copied_mib": max(copied, default=0.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--answers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args(argv)
    config = load_config(DEFAULT_CONFIG)
    cores = [Core(config.calendar, config.pipeline) for _ in range(PARTITIONS)]
    newest = 0
    for i, event in enumerate(live_events(config, args.events, args.rate)):
        cores[i % PARTITIONS].apply(event)
        newest = max(newest, event.ts)
    gc.collect()
    gc.freeze()  # as the worker keeps its state (streams.heap)
    as_of = newest + 1
    collector = KpiCollector(lambda: cores, Calendar(config.calendar), config,
                             clock=lambda: as_of)
    warm_sums(cores, as_of)

    def report() -> bytes:  # in a child, its private pages are what it no longer shares
        return orjson.dumps(build_report(cores, as_of, config)) + COPIED + \
            str(private_mib()).encode()

    def metrics() -> bytes:
        return collector.exposition() + COPIED + str(private_mib()).encode()

    print(f"{args.events:,} live events in {PARTITIONS} cores, worker RSS {rss_mib():.0f} MiB; "
          f"{native.status()[1]}")

    results = {}
    for name, kind in (("report", report), ("metrics", metrics)):
        for way, runner in (("on the loop", in_process), ("forked child", run_forked)):
            if way == "forked child":
                fork_started = time.perf_counter()
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                fork_ms = (time.perf_counter() - fork_started) * 1000
                os.waitpid(pid, 0)
            result = asyncio.run(measure(runner, [kind] * args.answers))
            if way == "on the loop":
                result["copied_mib"] = 0.0
            else:
                result["fork_ms"] = fork_ms
            results[(name, way)] = result
            extra = (f", fork {result['fork_ms']:.0f} ms, copied {result['copied_mib']:.0f} MiB"
                     if way == "forked child" else "")
            print(f"  {name:<8} {way:<13} latency p50 {result['latency_p50'] * 1000:7.0f} ms,"
                  f" loop stalled up to {result['stall_max'] * 1000:7.0f} ms, free "
                  f"{result['free'] * 100:5.1f} % of the time{extra}")
        loop, child = results[(name, "on the loop")], results[(name, "forked child")]
        print(f"  {name}: longest stall on the loop ÷ forked: "
              f"{loop['stall_max'] / max(child['stall_max'], 1e-6):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
