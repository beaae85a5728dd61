"""``kpi-engine report`` throughput against the ceiling of parsing the same file's JSON.

    python benchmarks/bench_report.py [--events FILE.jsonl] [--as-of RFC3339] [--rounds N]

Why this comparison: the target is ≥ 200,000 events/s on one core over the generator's
realistic mix, and a plain ``orjson.loads`` loop over the same lines is the floor that no
report can beat. Both run in this one process, on the same lines, best of ``--rounds``, timed
in process CPU time so that other work on a shared machine disturbs them less. The stages are
timed separately too (read lines, decode, apply to the core, build the report) so that a miss
says where the time goes. Then the command itself, ``kpi-engine report --events FILE``, runs as
a child process (start-up, replay, report, JSON output; its CPU time), once with the compiled
build (engine/native.py) if it is current and once interpreted (``KPI_ENGINE_PURE=1``).

Default input: two years of generated history for 60 reps (about 1M events) in the v2 mix
(``benchmarks/pipeline.toml``: five stages, about 8 % ``deal.updated``), made once with
``kpi-engine generate --seed 7 --from 2024-11-01 --to 2026-11-01 --events 1000000 --config
benchmarks/pipeline.toml`` and cached in the system temp directory; the report then runs with
that configuration (``--config``). ``--events F --config C`` measures any other file.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from engine import native
from engine.config import Config, load_config
from engine.core import Core
from engine.decode import decode
from engine.jsonl import iter_lines
from engine.replay import replay_file
from engine.report import build_report
from engine.timestamps import parse_instant

DEFAULT_FILE = Path(tempfile.gettempdir()) / "kpi-bench-2y-60reps-v2.jsonl"
DEFAULT_CONFIG = Path(__file__).resolve().parent / "pipeline.toml"


def ensure_default_file() -> Path:
    if not DEFAULT_FILE.exists():
        print(f"generating {DEFAULT_FILE} …", file=sys.stderr)
        tmp = DEFAULT_FILE.with_suffix(".tmp")
        subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--seed", "7",
                        "--from", "2024-11-01", "--to", "2026-11-01", "--events", "1000000",
                        "--config", str(DEFAULT_CONFIG), "--out", str(tmp)], check=True)
        tmp.rename(DEFAULT_FILE)
    return DEFAULT_FILE


def cpu(fn):
    """CPU seconds of ``fn()``, with the cyclic GC paused as ``replay_file`` pauses it."""
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        result = fn()
        return time.process_time() - started, result
    finally:
        gc.enable()


def command_cpu(path: Path, args: argparse.Namespace, env: dict[str, str]) -> float:
    """CPU seconds of one ``kpi-engine report`` child process (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "engine.cli", "report", "--events", str(path),
           "--as-of", args.as_of, "--out", os.devnull]
    if args.config:
        cmd += ["--config", str(args.config)]
    subprocess.run(cmd, check=True, env={**os.environ, **env}, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--as-of", default="2026-11-01T00:00:00Z")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = ensure_default_file()
        args.config = args.config or DEFAULT_CONFIG
    path = args.events
    config = load_config(args.config) if args.config else Config()
    as_of = parse_instant(args.as_of)

    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    n = 0
    for _ in range(args.rounds):
        t, lines = cpu(lambda: [raw for _, raw in iter_lines(path)])
        keep("read lines", t)
        n = len(lines)
        t, _ = cpu(lambda: [orjson.loads(raw) for raw in lines])
        keep("orjson.loads (ceiling)", t)
        currency, limit = config.money.currency, config.limits.max_event_bytes
        stages = config.pipeline.stage_ids or None
        t, events = cpu(lambda: [decode(raw, currency=currency, max_event_bytes=limit,
                                        stages=stages) for raw in lines])
        keep("decode", t)
        core = Core(config.calendar, config.pipeline)
        t, _ = cpu(lambda: [core.apply(e) for e in events])
        keep("apply to core", t)
        t, _ = cpu(lambda: build_report([core], as_of, config))
        keep("build report", t)
        del lines, events, core
        t, replay = cpu(lambda: replay_file(path, config))
        t2, _ = cpu(lambda: build_report([replay.core], as_of, config, replay.counts()))
        keep("report end to end", t + t2)
        del replay

    builds = [("compiled", {}), ("interpreted", {native.PURE_ENV: "1"})]
    for _ in range(args.rounds):
        for name, env in builds:
            keep(f"kpi-engine report, {name}", command_cpu(path, args, env))

    ceiling = best["orjson.loads (ceiling)"] + best["read lines"]
    print(f"{n:,} events from {path}, best of {args.rounds} rounds, CPU time")
    print(f"this process: {native.status()[1]}\n")
    print(f"{'stage':<26}{'seconds':>10}{'events/s':>14}{'× ceiling':>12}")
    for name, seconds in best.items():
        rate = n / seconds if seconds else float("inf")
        print(f"{name:<26}{seconds:>10.3f}{rate:>14,.0f}{seconds / ceiling:>12.2f}")
    command = best["kpi-engine report, compiled"]
    print(f"\nceiling (read + orjson.loads): {n / ceiling:,.0f} events/s; "
          f"report end to end: {n / best['report end to end']:,.0f} events/s; "
          f"the command: {n / command:,.0f} events/s "
          f"({best['kpi-engine report, interpreted'] / command:.2f}× faster than interpreted)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process (the lines, the events and one core): "
          f"{peak:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
