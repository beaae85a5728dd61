"""Time from worker start to ready with two years of state: cold, warm, and warm after kill -9.

    python benchmarks/bench_recovery.py [--events FILE.jsonl] [--lines N] [--partitions 4]
                                        [--bootstrap HOST:PORT]

One run, one broker, one app id. The two-year v2 file of the benchmarks (``bench_report.py``:
``kpi-engine generate --seed 7 --from 2024-11-01 --to 2026-11-01 --events 1000000 --config
benchmarks/pipeline.toml``, cached in the system temp directory; ``--lines N`` takes its first
N lines for a quick try) is produced to a fresh input topic and read by ``kpi-engine worker``
until every message is accounted for; then the worker is stopped and started again, and each
start is timed from the process start to the first moment that ``/ready`` answers 200 *and*
``/api/kpis`` answers 200 (complete: no partition missing), with ``/api/events`` then checked
to account for every message:

1. ``warm``: after a clean stop (SIGTERM): the local RocksDB files are reused;
2. ``warm after kill -9``: the same worker killed with SIGKILL once ready: the files are reused
   when provably not ahead of Kafka (``streams.local_state``), else it would be cold;
3. ``cold``: the data directory emptied: every partition recovered from the ledger changelog.

The three starts are repeated ``--rounds`` times (2); reported as the best seconds of each and
the ratio of cold to each warm start, and the CPU seconds the worker process used from its
start to that moment (steadier than the wall clock on a shared machine), with, per start,
where the time went (seconds from the
process start to the worker log's milestones: the app starting, the changelog read, the KPI
shards rebuilt from the local store, Faust ready) and, for the kill -9 start, the log line
saying whether local state was reused.

``--baseline DIR`` (a checkout of another commit, with its compiled build if it has one)
compares two versions on the same state in the same run: every start is made twice in a row,
once by the worker of ``DIR`` and once by this one (which goes first alternates by round), so
that the load of a shared machine weighs on both alike; reported per version, with the ratio.

Without ``--bootstrap`` a local broker is started in a temporary directory (as the tests do).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

from bench_report import DEFAULT_CONFIG, ensure_default_file
from bench_worker import produce, worker_toml
from broker import broker

from engine.kafka_local import free_port

READY_TIMEOUT = 1800
ROOT = Path(__file__).resolve().parent.parent


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def events_read(base: str) -> int:
    import json

    try:
        with urllib.request.urlopen(f"{base}/api/events", timeout=120) as response:
            return json.loads(response.read())["events"]["read"]
    except (OSError, ValueError, KeyError):
        return -1


class Runs:
    """Starts of ``kpi-engine worker`` with one configuration (one app id, one data dir)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.config = workdir / "worker.toml"
        self.config.write_text(worker_toml(bootstrap, topic, partitions, "recovery",
                                           self.data_dir, self.port)
                               + DEFAULT_CONFIG.read_text())
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, label: str, code: Path = ROOT) -> float:
        """Start a worker (the one of the checkout ``code``); the monotonic time it was started."""
        self.log_path = self.workdir / f"{label}.log"
        log = open(self.log_path, "wb")
        started = time.monotonic()
        self.started_wall = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "--config", str(self.config),
             "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=code,
            env={**os.environ, "PYTHONPATH": str(code)})
        log.close()
        return started

    def wait(self, condition, what: str, timeout: float = READY_TIMEOUT) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(f"the worker exited while waiting for {what}; "
                                 f"see {self.log_path}:\n{self.log_tail()}")
            if condition():
                return time.monotonic()
            time.sleep(0.1)
        raise SystemExit(f"timed out waiting for {what}; see {self.log_path}")

    def time_to_ready(self, label: str, total: int, code: Path = ROOT) -> tuple[float, float]:
        """Seconds from the start to ready and complete, and the worker's CPU seconds by then."""
        started = self.start(label, code)
        ready = self.wait(lambda: status(f"{self.base}/ready") == 200
                          and status(f"{self.base}/api/kpis") == 200, "ready and complete")
        cpu = self.cpu_seconds()
        read = events_read(self.base)
        if read != total:
            raise SystemExit(f"{label}: ready, but {read} of {total} messages accounted for")
        return ready - started, cpu

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the worker process has used so far (its own, not its
        ingest child's): on a shared machine a steadier measure than the wall clock."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def phases(self) -> str:
        """Seconds from the process start to the log's milestones (where the time went)."""
        marks = {"Starting...": "app starts", "Restoring state from changelog": "changelog read",
                 "Done reading from changelog": "changelog done",
                 "KPI state rebuilt": "shards rebuilt", "Worker ready": "Faust ready"}
        seen: dict[str, float] = {}
        text = self.log_path.read_text(errors="replace") if self.log_path else ""
        for line in text.splitlines():
            for needle, name in marks.items():
                if needle in line and line.startswith("[20"):
                    try:
                        at = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
                    except ValueError:
                        continue
                    offset = at.timestamp() - self.started_wall
                    if name == "shards rebuilt" or name not in seen:
                        seen[name] = offset  # the last rebuild, the first of the others
        rebuild_cpu = [float(m) for m in re.findall(r"KPI state rebuilt .*?\(([\d.]+) CPU s\)",
                                                    text)]
        return ", ".join([f"{name} {at:.1f}" for name, at in seen.items()] + (
            [f"rebuild {sum(rebuild_cpu):.1f} CPU s"] if rebuild_cpu else []))

    def stop(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=120)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""

    def log_lines(self, needle: str) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path else ""
        return [line for line in text.splitlines() if needle in line]


def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> int:
    path = Path(args.events) if args.events else ensure_default_file()
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    if args.lines:
        lines = lines[:args.lines]
    total = len(lines)
    topic = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    produce(lines, topic, bootstrap, args.partitions)
    print(f"input: {total} messages of {path} on {topic} ({args.partitions} partitions), "
          f"produced in {time.monotonic() - started:.0f} s", flush=True)
    del lines

    runs = Runs(bootstrap, topic, args.partitions, workdir)
    started = runs.start("load")
    runs.wait(lambda: events_read(runs.base) == total, f"all {total} messages",
              timeout=3600)
    print(f"first worker: all messages accounted for {time.monotonic() - started:.0f} s "
          "after its start", flush=True)
    runs.stop(signal.SIGTERM)
    state = sum(f.stat().st_size for f in runs.data_dir.rglob("*") if f.is_file())
    print(f"local state after a clean stop: {state / 2**20:.0f} MiB", flush=True)

    versions = {"this": ROOT}
    if args.baseline:
        versions = {"baseline": Path(args.baseline).resolve(), "this": ROOT}
    results: dict[tuple[str, str], float] = {}
    cpus: dict[tuple[str, str], float] = {}
    reuse: list[str] = []

    def start(kind: str, code: str, what: str, label: str) -> None:
        seconds, cpu = runs.time_to_ready(label, total, versions[code])
        results[kind, code] = min(results.get((kind, code), float("inf")), seconds)
        cpus[kind, code] = min(cpus.get((kind, code), float("inf")), cpu)
        name = f" [{code}]" if len(versions) > 1 else ""
        print(f"  {what}{name}: {seconds:.1f} s, {cpu:.1f} CPU s ({runs.phases()})", flush=True)

    for round_ in range(1, args.rounds + 1):
        print(f"round {round_}:")
        order = list(versions) if round_ % 2 else list(reversed(versions))
        for i, code in enumerate(order):
            start("warm", code, "warm (after a clean stop)", "warm")
            runs.stop(signal.SIGTERM if i + 1 < len(order) else signal.SIGKILL)
        for i, code in enumerate(order):
            start("kill9", code, "warm after kill -9", "after-kill")
            reuse += runs.log_lines("did not stop cleanly")
            for line in runs.log_lines("did not stop cleanly"):
                print(f"    log: {line.strip()[:300]}")
            runs.stop(signal.SIGKILL if i + 1 < len(order) else signal.SIGTERM)
        for code in order:
            shutil.rmtree(runs.data_dir)
            start("cold", code, "cold (empty data dir, from the changelog)", "cold")
            runs.stop(signal.SIGTERM)

    print(f"\n{total} messages, {args.partitions} partitions: time from start to ready and "
          f"/api/kpis complete, best of {args.rounds}")
    for code in versions:
        name = f" [{code}: {versions[code]}]" if len(versions) > 1 else ""
        cold, warm, kill9 = (results[kind, code] for kind in ("cold", "warm", "kill9"))
        print(f"  cold {cold:.1f} s, warm {warm:.1f} s, warm after kill -9 {kill9:.1f} s{name}")
        print(f"  cold / warm {cold / warm:.1f}x, cold / warm after kill -9 {cold / kill9:.1f}x")
        print("  worker CPU seconds to ready: " + ", ".join(
            f"{kind} {cpus[kind, code]:.1f}" for kind in ("cold", "warm", "kill9")))
    if len(versions) > 1:
        for what, table in (("seconds", results), ("CPU seconds", cpus)):
            print(f"  baseline / this, {what}: " + ", ".join(
                f"{kind} {table[kind, 'baseline'] / table[kind, 'this']:.2f}x"
                for kind in ("cold", "warm", "kill9")))
    return 0 if reuse and all("reusing" in line for line in reuse) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", help="a JSONL file (default: the cached two-year v2 file)")
    parser.add_argument("--lines", type=int, default=0, help="only the first N lines")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--baseline", help="a checkout of another version to compare with")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        workdir = Path(tmp)
        with broker(args.bootstrap, workdir) as bootstrap:
            return run(args, bootstrap, workdir)


if __name__ == "__main__":
    sys.exit(main())
