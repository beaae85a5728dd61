"""Soak: one worker fed a steady stream for a long time, watched as a dashboard would watch it.

    python benchmarks/bench_soak.py [--minutes 30] [--rate 2000] [--partitions 4]
                                    [--csv docs/soak.csv] [--svg docs/soak.svg]
                                    [--bootstrap HOST:PORT] [--answers fork|loop]

``kpi-engine worker`` (durable state, ingest child process) on a fresh input topic; a producer
sends generated live v2 traffic (``engine.tooling.generator.live_lines``, the mix of
``benchmarks/pipeline.toml``, 2 % redeliveries and 1 % invalid messages) at ``--rate`` messages
per second, each stamped "now", for ``--minutes``. Meanwhile:

- every ``--kpis-seconds`` (5, the wallboard's refresh) ``GET /api/kpis`` is timed, and the
  age of its answer (when it arrived minus its ``as_of``) noted: answers are shared, and served
  older while computing them has used its share of the time (``streams.answers``);
- every ``--sample-seconds`` (15, the project's Prometheus scrape interval) ``GET /metrics`` is timed and read for
  ``kpi_consumer_lag_messages`` (input not yet judged) and ``kpi_apply_lag_bundles`` (bundles
  not yet applied), summed over partitions, and the resident memory of the worker and of its
  ingest child is read from /proc.

At the end the producer stops and the worker must account for every message it was sent
(``/api/events`` ``read`` equal to the acknowledged count, within ``--drain-seconds``), or the
run fails. Written: a CSV of
the samples (``--csv``; with the private memory of the forked children computing answers, when
one runs at the sample), a CSV of ``/api/kpis`` latency and answer age p50/p99 per minute
(``--minutes-csv``), and an SVG plot of RSS, latency, answer age and lag over time (``--svg``;
drawn here, no plotting library). ``--answers`` sets the worker's ``[worker] answers``.

Without ``--bootstrap`` a local broker is started in a temporary directory (as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

from bench_worker import STAGES, Worker, _create_topic, tree_cpu_seconds
from broker import broker

DOCS = Path(__file__).resolve().parent.parent / "docs"


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return kb / 1024


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def is_ingest_child(pid: int) -> bool:
    """The ingest stage's process (multiprocessing spawn), not a forked answer's child."""
    try:
        return b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def private_mib(pid: int) -> float:
    """Pages a forked child no longer shares with the worker (copied on write)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            kb = sum(int(line.split()[1]) for line in fh
                     if line.startswith(("Private_Dirty:", "Private_Clean:")))
    except (OSError, ValueError):
        return 0.0
    return kb / 1024


def metric_sum(text: str, name: str) -> int:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def timed_get(url: str, timeout: float = 60) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except OSError:
        body, status = b"", 0
    return time.perf_counter() - started, status, body


class Producer(threading.Thread):
    """Sends live generated lines at ``rate``/s until stopped; ``acked`` counts what Kafka
    acknowledged, ``failed`` what it did not."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.stop_event = threading.Event()
        self.sent = self.acked = self.failed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        from engine.producer import entity_key
        from engine.tooling.generator import GeneratorSettings, live_lines

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        lines = live_lines(GeneratorSettings(seed=13, duplicates=0.02, invalid=0.01,
                                             stages=STAGES[0]), self.rate)
        pending: list[asyncio.Future] = []
        last_check = time.monotonic()
        try:
            due, line = next(lines)
            while not self.stop_event.is_set():
                await asyncio.sleep(max(0.0, due - time.time()))
                now = time.time()
                while due <= now:
                    pending.append(await producer.send(self.topic, line,
                                                       key=entity_key(line)))
                    self.sent += 1
                    due, line = next(lines)
                if time.monotonic() - last_check >= 1.0:
                    await self._settle(pending)
                    pending = []
                    last_check = time.monotonic()
            await producer.flush()
            await self._settle(pending)
        finally:
            await producer.stop()

    async def _settle(self, pending: list[asyncio.Future]) -> None:
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, BaseException):
                self.failed += 1
            else:
                self.acked += 1


class KpisPoller(threading.Thread):
    """``GET /api/kpis`` every ``interval`` s: (seconds since start, latency s, status, age s
    of the answer: when it arrived minus its ``as_of``, NaN unless 200)."""

    def __init__(self, url: str, t0: float, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url, self.t0, self.interval = url, t0, interval
        self.samples: list[tuple[float, float, int, float]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            seconds, status, body = timed_get(self.url)
            self.samples.append((started - self.t0, seconds, status, answer_age(status, body)))
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))


def answer_age(status: int, body: bytes) -> float:
    """Seconds between an answer's ``as_of`` and now: answers are shared for a second, and
    served older while computing them has used its share of the time (streams.answers)."""
    if status != 200:
        return math.nan
    try:
        as_of = datetime.fromisoformat(json.loads(body)["as_of"])
    except (ValueError, KeyError, TypeError):
        return math.nan
    return time.time() - as_of.timestamp()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# -- the plot ------------------------------------------------------------------------------------

def svg_plot(path: Path, title: str, panels: list[tuple[str, list[tuple[str, str,
             list[tuple[float, float]]]]]], x_max: float,
             stop_at: float | None = None) -> None:
    """A stacked line chart: one panel per (y label, [(series label, colour, [(x, y)])]),
    x in minutes (``stop_at``: a dashed line there). Hand-written SVG: polylines, axes, a few
    ticks, a legend."""
    width, panel_h, left, right, top, gap = 900, 190, 70, 20, 40, 45
    height = top + len(panels) * (panel_h + gap)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{_esc(title)}</text>']
    plot_w = width - left - right
    for i, (ylabel, series) in enumerate(panels):
        y0 = top + i * (panel_h + gap)
        top_value = max([y for _, _, pts in series for _, y in pts] + [0.0])
        y_step = _nice_step(top_value / 4)
        ticks = max(1, math.ceil(top_value / y_step))
        y_max = y_step * ticks
        sx = lambda x: left + plot_w * x / x_max  # noqa: E731
        sy = lambda y: y0 + panel_h - panel_h * y / y_max  # noqa: E731
        out.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" '
                   'fill="none" stroke="#999"/>')
        for k in range(ticks + 1):
            value = y_step * k
            y = sy(value)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                       'stroke="#eee"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                       f'{_fmt(value)}</text>')
        step = max(1, round(x_max / 10))
        for m in range(0, int(x_max) + 1, step):
            x = sx(m)
            out.append(f'<text x="{x:.1f}" y="{y0 + panel_h + 15}" text-anchor="middle">'
                       f'{m}</text>')
        if stop_at is not None:
            out.append(f'<line x1="{sx(stop_at):.1f}" y1="{y0}" x2="{sx(stop_at):.1f}" '
                       f'y2="{y0 + panel_h}" stroke="#555" stroke-dasharray="4 3"/>')
            out.append(f'<text x="{sx(stop_at) - 4:.1f}" y="{y0 + panel_h - 6}" '
                       'text-anchor="end" fill="#555">producer stops</text>')
        out.append(f'<text x="{left + plot_w / 2}" y="{y0 + panel_h + 30}" '
                   'text-anchor="middle" fill="#555">minutes</text>')
        out.append(f'<text x="14" y="{y0 + panel_h / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 14 {y0 + panel_h / 2})">{_esc(ylabel)}</text>')
        for j, (label, colour, pts) in enumerate(series):
            if pts:
                coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
                out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                           'stroke-width="1.5"/>')
            lx = left + 10 + j * 190
            out.append(f'<line x1="{lx}" y1="{y0 + 12}" x2="{lx + 20}" y2="{y0 + 12}" '
                       f'stroke="{colour}" stroke-width="3"/>')
            out.append(f'<text x="{lx + 25}" y="{y0 + 16}">{_esc(label)}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def _nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at least ``raw`` (1 for nothing to show)."""
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- the run -------------------------------------------------------------------------------------

def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> int:
    topic = f"soak-in-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(bootstrap, topic, args.partitions))
    worker = Worker(bootstrap, topic, args.partitions, workdir, "soak")
    worker.wait_ready()
    base = f"http://127.0.0.1:{worker.port}"
    t0 = time.monotonic()
    producer = Producer(bootstrap, topic, args.rate)
    kpis = KpisPoller(f"{base}/api/kpis", t0, args.kpis_seconds)
    producer.start()
    kpis.start()
    rows: list[dict] = []
    duration = args.minutes * 60
    cpu0 = tree_cpu_seconds(worker.process.pid)
    try:
        due = t0
        while time.monotonic() - t0 < duration:
            due += args.sample_seconds
            time.sleep(max(0.0, due - time.monotonic()))
            if worker.process.poll() is not None:
                raise SystemExit(f"the worker exited; see {worker.log.name}")
            if producer.error is not None:
                raise SystemExit(f"the producer failed: {producer.error!r}")
            rows.append(sample(worker, base, t0, producer))
            last = rows[-1]
            write_samples(args.csv, rows)  # as it goes: an interrupted run keeps its samples
            if len(rows) % max(1, int(60 / args.sample_seconds)) == 0:
                print(f"{last['t_s']:7.0f} s: sent {last['sent']}, read {last['read']}, "
                      f"RSS {last['rss_worker_mib']:.0f}+{last['rss_ingest_mib']:.0f} MiB, "
                      f"lag {last['consumer_lag']}/{last['apply_lag']}", flush=True)
        producer.stop_event.set()
        producer.join(timeout=60)
        cpu = tree_cpu_seconds(worker.process.pid) - cpu0
        if producer.error is not None:
            raise SystemExit(f"the producer failed: {producer.error!r}")
        deadline = time.monotonic() + args.drain_seconds
        read = -1
        while time.monotonic() < deadline:
            events = worker.events()
            read = events["read"] if events else -1
            if read >= producer.acked:
                break
            time.sleep(0.5)
        drained = time.monotonic() - t0 - duration
        rows.append(sample(worker, base, t0, producer))
    finally:
        kpis.stop_event.set()
        kpis.join(timeout=70)
        worker.stop()

    write_outputs(args, rows, kpis.samples)
    latencies = [s for _, s, status, _ in kpis.samples if status == 200]
    errors = [status for _, _, status, _ in kpis.samples if status != 200]
    ages = [age for *_, age in kpis.samples if not math.isnan(age)]
    metrics_ms = [r["metrics_ms"] for r in rows]
    first_min = [r for r in rows if r["t_s"] <= 60]
    print(f"\n{args.minutes:g} min at {args.rate:g} msg/s, {args.partitions} partitions")
    print(f"produced (acknowledged) {producer.acked}, failed {producer.failed}; worker read "
          f"{read} ({'EQUAL' if read == producer.acked else 'NOT EQUAL'}), "
          f"drained {drained:.1f} s after the producer stopped")
    print(f"worker + ingest CPU: {cpu:.0f} s over {duration:.0f} s "
          f"({100 * cpu / duration:.1f} % of one core)")
    print(f"RSS worker: {first_min[-1]['rss_worker_mib'] if first_min else 0:.0f} MiB after "
          f"1 min, {max(r['rss_worker_mib'] for r in rows):.0f} max, "
          f"{rows[-1]['rss_worker_mib']:.0f} at the end; ingest child "
          f"{max(r['rss_ingest_mib'] for r in rows):.0f} max, "
          f"{rows[-1]['rss_ingest_mib']:.0f} at the end")
    print(f"/api/kpis: {len(latencies)} answers, {len(errors)} not 200; p50 "
          f"{percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f}"
          f" ms, max {max(latencies) * 1000:.1f} ms")
    if ages:
        print(f"/api/kpis answer age (now - as_of): p50 {percentile(ages, 50):.1f} s, p99 "
              f"{percentile(ages, 99):.1f} s, max {max(ages):.1f} s")
    print(f"/metrics: p50 {statistics.median(metrics_ms):.1f} ms, max {max(metrics_ms):.1f} ms")
    children_mib = [r["answer_children_private_mib"] for r in rows]
    print(f"answer children (forked), private memory when sampled: max "
          f"{max(children_mib):.0f} MiB; present in {sum(1 for v in children_mib if v)} of "
          f"{len(rows)} samples")
    print(f"consumer lag max {max(r['consumer_lag'] for r in rows)} messages, apply lag max "
          f"{max(r['apply_lag'] for r in rows)} bundles")
    return 0 if read == producer.acked and producer.failed == 0 else 1


def sample(worker: Worker, base: str, t0: float, producer: Producer) -> dict:
    t = time.monotonic() - t0
    metrics_s, _, text = timed_get(f"{base}/metrics")
    events = worker.events() or {}
    body = text.decode(errors="replace")
    kids = children(worker.process.pid)
    ingest = [c for c in kids if is_ingest_child(c)]
    answering = [c for c in kids if c not in ingest]
    return {"t_s": round(t, 1), "sent": producer.sent, "read": events.get("read", -1),
            "rss_worker_mib": round(rss_mib(worker.process.pid), 1),
            "rss_ingest_mib": round(sum(rss_mib(c) for c in ingest), 1),
            "answer_children_private_mib": round(sum(private_mib(c) for c in answering), 1),
            "consumer_lag": metric_sum(body, "kpi_consumer_lag_messages"),
            "apply_lag": metric_sum(body, "kpi_apply_lag_bundles"),
            "metrics_ms": round(metrics_s * 1000, 1)}


def write_samples(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(args: argparse.Namespace, rows: list[dict],
                  kpis: list[tuple[float, float, int, float]]) -> None:
    write_samples(args.csv, rows)
    per_minute: list[tuple[int, float, float, int, float, float]] = []
    for minute in range(int(max(t for t, *_ in kpis) // 60) + 1):
        within = [(s, age) for t, s, status, age in kpis
                  if minute * 60 <= t < minute * 60 + 60 and status == 200]
        values = [s * 1000 for s, _ in within]
        ages = [age for _, age in within if not math.isnan(age)] or [math.nan]
        if values:
            per_minute.append((minute, percentile(values, 50), percentile(values, 99),
                               len(values), percentile(ages, 50), percentile(ages, 99)))
    with open(args.minutes_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["minute", "api_kpis_p50_ms", "api_kpis_p99_ms", "requests",
                         "answer_age_p50_s", "answer_age_p99_s"])
        for minute, p50, p99, n, age50, age99 in per_minute:
            writer.writerow([minute, f"{p50:.1f}", f"{p99:.1f}", n, f"{age50:.1f}",
                             f"{age99:.1f}"])
    plot(args, rows, per_minute)


def replot(args: argparse.Namespace) -> None:
    """Draw the SVG again from the two CSVs of an earlier run (``--plot-only``)."""
    with open(args.csv, newline="") as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    with open(args.minutes_csv, newline="") as fh:
        per_minute = [(int(r["minute"]), float(r["api_kpis_p50_ms"]),
                       float(r["api_kpis_p99_ms"]), int(r["requests"]),
                       float(r.get("answer_age_p50_s") or "nan"),
                       float(r.get("answer_age_p99_s") or "nan"))
                      for r in csv.DictReader(fh)]
    plot(args, rows, per_minute)


def plot(args: argparse.Namespace, rows: list[dict],
         per_minute: list[tuple[int, float, float, int, float, float]]) -> None:
    x = lambda r: r["t_s"] / 60  # noqa: E731
    svg_plot(Path(args.svg),
             f"Soak: {args.rate:g} events/s for {args.minutes:g} min, one worker, "
             f"{args.partitions} partitions",
             [("RSS (MiB)", [("worker", "#1f77b4", [(x(r), r["rss_worker_mib"]) for r in rows]),
                             ("ingest child", "#ff7f0e",
                              [(x(r), r["rss_ingest_mib"]) for r in rows])]),
              ("/api/kpis (ms)", [("p50 per minute", "#2ca02c",
                                   [(m + 0.5, p50) for m, p50, *_ in per_minute]),
                                  ("p99 per minute", "#d62728",
                                   [(m + 0.5, p99) for m, _, p99, *_ in per_minute])]),
              ("answer age (s)", [("p50 per minute", "#17becf",
                                   [(m + 0.5, a) for m, *_, a, _ in per_minute
                                    if not math.isnan(a)]),
                                  ("p99 per minute", "#e377c2",
                                   [(m + 0.5, a) for m, *_, a in per_minute
                                    if not math.isnan(a)])]),
              ("lag", [("consumer lag (messages)", "#9467bd",
                        [(x(r), r["consumer_lag"]) for r in rows]),
                       ("apply lag (bundles)", "#8c564b",
                        [(x(r), r["apply_lag"]) for r in rows])])],
             x_max=max(args.minutes, rows[-1]["t_s"] / 60), stop_at=args.minutes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--sample-seconds", type=float, default=15.0,
                        help="how often /metrics and memory are read (Prometheus: 15 s)")
    parser.add_argument("--kpis-seconds", type=float, default=5.0,
                        help="how often /api/kpis is asked (the wallboard: 5 s)")
    parser.add_argument("--drain-seconds", type=float, default=900.0,
                        help="how long the worker may take to catch up at the end")
    parser.add_argument("--csv", default=str(DOCS / "soak.csv"))
    parser.add_argument("--minutes-csv", default=str(DOCS / "soak-minutes.csv"))
    parser.add_argument("--svg", default=str(DOCS / "soak.svg"))
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--answers", choices=("fork", "loop"), default="fork",
                        help="where the worker computes its answers ([worker] answers)")
    parser.add_argument("--plot-only", action="store_true",
                        help="only draw --svg again from --csv and --minutes-csv")
    args = parser.parse_args(argv)
    if args.plot_only:
        replot(args)
        return 0
    os.environ["KPI_WORKER_ANSWERS"] = args.answers  # the worker's config override
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = Path(tmp)
        with broker(args.bootstrap, workdir) as bootstrap:
            return run(args, bootstrap, workdir)


if __name__ == "__main__":
    sys.exit(main())
