"""Live worker throughput through real Kafka, beside two references, and its latency.

    python benchmarks/bench_worker.py [--events N] [--days N] [--partitions N]
                                      [--naive-events N] [--rate R] [--latency-seconds S]
                                      [--bootstrap HOST:PORT]

One run, one broker, one input topic holding the same messages for all three (generated
history: 300 days, 60 reps, 2 % redeliveries, 1 % invalid messages, in the v2 mix of
``benchmarks/pipeline.toml`` — five stages, about 8 % ``deal.updated`` — unless ``--v1``;
produced with the project's producer, so keyed by entity):

1. ``raw``: a plain aiokafka consumer that reads every message and decodes it
   (:class:`engine.decode.Decoder`): the ceiling of anything that reads Kafka in Python here.
2. ``naive``: a Faust agent that decodes each message and does one table write per event
   (RocksDB store, changelog): how a Faust worker is usually written. Measured on the first
   ``--naive-events`` messages only (it is slow).
3. ``worker``: ``kpi-engine worker`` with durable state (RocksDB, ledger changelog), from the
   first message accounted for to the last (``GET /api/events``). Its CPU time includes its
   child process (the ingest stage).

Each is reported as messages/s of wall-clock time and per CPU-second of its own process, with
the broker's CPU time beside it (all on this machine), and the worker's ratios to the others.

With all the messages applied, the worker's resident memory (and its ingest child's) and the
time of one ``/metrics`` scrape and one ``/api/kpis`` report are printed: with ``--days 730
--events 1000000`` that is two years of state for 60 reps.

Then latency: a fresh worker, events produced at ``--rate`` per second, each stamped with the
wall clock as it is sent (``engine.tooling.generator.live_lines``), and ``GET /api/events`` polled
every few milliseconds; an event's latency is from the moment it was handed to the producer
to the first poll that counts it. Percentiles over events, after a warm-up second.

Without ``--bootstrap`` a local broker is started in a temporary directory (as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from engine.config import KafkaConfig, load_config
from engine.kafka_local import LocalKafka, free_port

PIPELINE_CONFIG = Path(__file__).resolve().parent / "pipeline.toml"
#: The stages (SPEC §7) of the run; () for the v1 mix (--v1).
STAGES: list[tuple[str, ...]] = [tuple(s.id for s in load_config(PIPELINE_CONFIG).pipeline.stages)]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Throughput run: how often the worker is asked how far it got (each request costs it ~1 ms).
POLL_SECONDS = 0.05


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (the worker's ingest stage is a child)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += tree_cpu_seconds(int(stat.parent.name))
    return total


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the input -------------------------------------------------------------------------------------

def generated_lines(events: int, days: int = 300) -> list[bytes]:
    from engine.tooling.generator import GeneratorSettings, history_lines, scale_for_events

    end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    start = end - timedelta(days=days)
    base = GeneratorSettings(seed=7, duplicates=0.02, invalid=0.01, stages=STAGES[0])
    settings = GeneratorSettings(seed=7, duplicates=0.02, invalid=0.01, stages=STAGES[0],
                                 scale=scale_for_events(base, start, end, events))
    return list(history_lines(settings, start, end))


def produce(lines: list[bytes], topic: str, bootstrap: str, partitions: int) -> None:
    from engine.producer import send_lines

    result = asyncio.run(send_lines(lines, topic=topic, kafka_config=KafkaConfig(bootstrap),
                                    partitions=partitions))
    if result.failed:
        raise SystemExit(f"producing failed: {result.errors}")


# -- 1. raw aiokafka ----------------------------------------------------------------------------

def bench_raw(bootstrap: str, topic: str, total: int) -> dict:
    from aiokafka import AIOKafkaConsumer

    from engine.config import Config
    from engine.decode import Decoder

    async def run() -> dict:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    max_partition_fetch_bytes=4 << 20)
        await consumer.start()
        decoder = Decoder(load_config(PIPELINE_CONFIG) if STAGES[0] else Config())
        count = 0
        try:
            started, cpu0 = time.monotonic(), self_cpu()
            while count < total:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for records in batch.values():
                    for record in records:
                        decoder(record.value)
                    count += len(records)
            return {"messages": count, "seconds": time.monotonic() - started,
                    "cpu": self_cpu() - cpu0}
        finally:
            await consumer.stop()

    return asyncio.run(run())


# -- 2. a naive Faust agent (run in a child process: ``naive`` sub-command) ------------------------

def naive_agent_main(bootstrap: str, topic: str, partitions: int, count: int,
                     data_dir: str) -> None:
    """A Faust app whose agent decodes each message and writes it to a table: one write each."""
    import faust

    from engine.config import Config
    from engine.decode import Decoder
    from engine.event import Rejection

    app = faust.App(f"bench-naive-{uuid.uuid4().hex[:8]}", broker=f"kafka://{bootstrap}",
                    store="rocksdb://", datadir=data_dir, web_enabled=False,
                    topic_partitions=partitions, consumer_auto_offset_reset="earliest",
                    key_serializer="raw", value_serializer="raw", autodiscover=False)
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    table = app.Table("events", key_type=bytes, value_type=bytes, partitions=partitions)
    decoder = Decoder(load_config(PIPELINE_CONFIG) if STAGES[0] else Config())
    state = {"n": 0}

    @app.agent(source)
    async def naive(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            result = decoder(message.value)
            key = (f"invalid|{message.partition}|{message.offset}".encode()
                   if isinstance(result, Rejection) else result.event_id.encode())
            table[key] = message.value or b""
            state["n"] += 1
            if state["n"] == 1:
                state["t0"], state["cpu0"] = time.monotonic(), self_cpu()
            elif state["n"] == count:
                Path(data_dir, "result.json").write_text(json.dumps({
                    "messages": count - 1, "seconds": time.monotonic() - state["t0"],
                    "cpu": self_cpu() - state["cpu0"]}))
                os._exit(0)

    worker = faust.Worker(app, loglevel="error", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()


def bench_naive(bootstrap: str, topic: str, partitions: int, count: int, broker_pid: int | None,
                workdir: Path) -> dict:
    broker0 = cpu_seconds(broker_pid) if broker_pid else 0.0
    data_dir = workdir / "naive"
    data_dir.mkdir()
    done = subprocess.run(
        [sys.executable, __file__, "naive", "--bootstrap", bootstrap, "--topic", topic,
         "--partitions", str(partitions), "--count", str(count),
         "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=1800)
    if not (data_dir / "result.json").exists():
        raise SystemExit(f"the naive agent failed:\n{done.stderr[-3000:]}")
    result = json.loads((data_dir / "result.json").read_text())
    result["broker_cpu_whole_run"] = (cpu_seconds(broker_pid) - broker0) if broker_pid else None
    return result


# -- 3. the worker -------------------------------------------------------------------------------

def worker_toml(bootstrap: str, topic: str, partitions: int, label: str, data_dir: Path,
                port: int) -> str:
    """The ``[kafka]``, ``[topics]`` and ``[worker]`` sections of a benchmark's worker: a fresh
    app id (``bench-<label>-…``), the dead-letter topic beside ``topic``."""
    return f"""
[kafka]
bootstrap_servers = "{bootstrap}"
[topics]
input = "{topic}"
dead_letter = "{topic}-dlq"
partitions = {partitions}
[worker]
app_id = "bench-{label}-{uuid.uuid4().hex[:8]}"
data_dir = "{data_dir}"
web_port = {port}
"""


class Worker:
    """``kpi-engine worker`` in a child process, with a fresh app id."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, workdir: Path,
                 label: str) -> None:
        self.port = free_port()
        self.config = workdir / f"{label}.toml"
        self.config.write_text(worker_toml(bootstrap, topic, partitions, label,
                                           workdir / label, self.port)
                               + (PIPELINE_CONFIG.read_text() if STAGES[0] else ""))
        self.log = open(workdir / f"{label}.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "--config", str(self.config)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def events(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/events",
                                        timeout=10) as response:
                return json.loads(response.read())["events"]
        except OSError:
            return None

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.events() is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker not ready; see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def bench_worker(bootstrap: str, topic: str, partitions: int, total: int,
                 broker_pid: int | None, workdir: Path) -> dict:
    worker = Worker(bootstrap, topic, partitions, workdir, "throughput")
    try:
        first = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            events = worker.events()
            now = time.monotonic()
            if events is None or events["read"] == 0:
                if worker.process.poll() is not None:
                    raise SystemExit("the worker exited")
                time.sleep(0.01)
                continue
            if first is None:
                first = (now, events["read"], tree_cpu_seconds(worker.process.pid),
                         cpu_seconds(broker_pid) if broker_pid else 0.0)
            if events["read"] >= total:
                t0, n0, cpu0, broker0 = first
                result = {"messages": events["read"] - n0, "seconds": now - t0,
                          "cpu": tree_cpu_seconds(worker.process.pid) - cpu0,
                          "broker_cpu": (cpu_seconds(broker_pid) - broker0) if broker_pid
                          else None, "events": events}
                result.update(serving_costs(worker))
                return result
            time.sleep(POLL_SECONDS)
        raise SystemExit("the worker did not finish in time")
    finally:
        worker.stop()


def serving_costs(worker: "Worker") -> dict:
    """With all the state loaded: resident memory of the worker (and its ingest child), and
    the wall time of one ``/metrics`` scrape and one ``/api/kpis`` report (best of 3, each
    computed afresh: the worker shares an answer for a second, streams.answers, so the tries
    are 1.2 s apart)."""
    def rss_mib(pid: int) -> float:
        with open(f"/proc/{pid}/status") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        return kb / 1024

    def timed(path: str) -> float:
        best = float("inf")
        for _ in range(3):
            time.sleep(1.2)
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}",
                                        timeout=120) as response:
                response.read()
            best = min(best, time.perf_counter() - started)
        return best

    pid = worker.process.pid
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                              check=False).stdout.split()
    return {"rss_worker_mib": rss_mib(pid),
            "rss_children_mib": sum(rss_mib(int(c)) for c in children),
            "metrics_seconds": timed("/metrics"), "api_kpis_seconds": timed("/api/kpis")}


# -- latency ---------------------------------------------------------------------------------

def bench_latency(bootstrap: str, partitions: int, rate: float, seconds: float,
                  workdir: Path) -> dict:
    from aiokafka import AIOKafkaProducer

    from engine.tooling.generator import GeneratorSettings, live_lines
    from engine.producer import entity_key

    topic = f"bench-live-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(bootstrap, topic, partitions))
    worker = Worker(bootstrap, topic, partitions, workdir, "latency")
    worker.wait_ready()
    polls: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            events = worker.events()
            if events is not None:
                polls.append((time.monotonic(), events["read"]))
            time.sleep(0.002)

    sent: list[tuple[float, int]] = []  # (handed to the producer, cumulative messages)

    async def produce_paced() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
        await producer.start()
        lines = live_lines(GeneratorSettings(seed=11, stages=STAGES[0]), rate)
        try:
            due, line = next(lines)
            count = 0
            end = time.time() + seconds
            while due < end:
                await asyncio.sleep(max(0.0, due - time.time()))
                batch_end = time.time()
                while due <= batch_end:
                    await producer.send(topic, line, key=entity_key(line))
                    count += 1
                    due, line = next(lines)
                sent.append((time.monotonic(), count))
            await producer.flush()
        finally:
            await producer.stop()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        asyncio.run(produce_paced())
        total = sent[-1][1]
        deadline = time.monotonic() + 60
        while (not polls or polls[-1][1] < total) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        poller.join()
        worker.stop()
    latencies: list[float] = []
    start = sent[0][0] + 1.0  # warm-up
    previous = 0
    j = 0
    for handed, cumulative in sent:
        while j < len(polls) and (polls[j][1] < cumulative or polls[j][0] < handed):
            j += 1
        if j == len(polls):
            break
        if handed >= start:
            latencies += [polls[j][0] - handed] * (cumulative - previous)
        previous = cumulative
    latencies.sort()
    if not latencies:
        raise SystemExit("no latency samples")

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    gaps = [b[0] - a[0] for a, b in zip(polls, polls[1:])]
    return {"events": len(latencies), "rate": rate, "p50_ms": pct(50), "p90_ms": pct(90),
            "p99_ms": pct(99), "max_ms": latencies[-1] * 1000,
            "poll_interval_ms": statistics.median(gaps) * 1000 if gaps else None}


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from engine.kafka_client import ensure_topics

    await ensure_topics(KafkaConfig(bootstrap), {topic: partitions})


# -- main ----------------------------------------------------------------------------------------

def rate(result: dict) -> float:
    return result["messages"] / result["seconds"]


def per_cpu(result: dict) -> float:
    return result["messages"] / result["cpu"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    naive = sub.add_parser("naive", help="(internal) run the naive Faust agent")
    for name in ("--bootstrap", "--topic", "--data-dir"):
        naive.add_argument(name, required=True)
    naive.add_argument("--partitions", type=int, required=True)
    naive.add_argument("--count", type=int, required=True)
    parser.add_argument("--events", type=int, default=600_000,
                        help="generated events (about; plus 3 %% noise)")
    parser.add_argument("--days", type=int, default=300,
                        help="days of generated history (730 for two years of state)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--naive-events", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="latency run: events/s")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--v1", action="store_true",
                        help="the v1 mix: no stages, no deal.updated (earlier runs)")
    args = parser.parse_args(argv)
    if args.v1:
        STAGES[0] = ()
    if args.command == "naive":
        naive_agent_main(args.bootstrap, args.topic, args.partitions, args.count, args.data_dir)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        workdir = Path(tmp)
        kafka = None
        if args.bootstrap:
            bootstrap, broker_pid = args.bootstrap, None
        else:
            kafka = LocalKafka(workdir / "kafka")
            kafka.start()
            bootstrap, broker_pid = kafka.bootstrap, kafka.pid
        try:
            return run(args, bootstrap, broker_pid, workdir)
        finally:
            if kafka is not None:
                kafka.stop()


def run(args: argparse.Namespace, bootstrap: str, broker_pid: int | None,
        workdir: Path) -> int:
    print(f"machine: {os.cpu_count()} CPUs; broker {bootstrap}; partitions {args.partitions}")
    lines = generated_lines(args.events, args.days)
    topic = f"bench-in-{uuid.uuid4().hex[:8]}"
    produce(lines, topic, bootstrap, args.partitions)
    total = len(lines)
    print(f"input: {total} messages on {topic}")

    raw = bench_raw(bootstrap, topic, total)
    naive = bench_naive(bootstrap, topic, args.partitions, min(args.naive_events, total),
                        broker_pid, workdir)
    worker = bench_worker(bootstrap, topic, args.partitions, total, broker_pid, workdir)

    print(f"\n{'':8} {'messages':>9} {'seconds':>8} {'msg/s':>9} {'msg/CPU-s':>10} "
          f"{'CPU s':>7}")
    for name, result in (("raw", raw), ("naive", naive), ("worker", worker)):
        print(f"{name:8} {result['messages']:9d} {result['seconds']:8.2f} {rate(result):9.0f} "
              f"{per_cpu(result):10.0f} {result['cpu']:7.2f}")
    if worker.get("broker_cpu") is not None:
        print(f"broker CPU during the worker's run: {worker['broker_cpu']:.2f} s")
    print(f"worker / raw: {rate(worker) / rate(raw):.2f} (wall), "
          f"{per_cpu(worker) / per_cpu(raw):.2f} (per CPU-s)")
    print(f"worker / naive: {rate(worker) / rate(naive):.1f} (wall), "
          f"{per_cpu(worker) / per_cpu(naive):.1f} (per CPU-s)")
    print(f"worker events block: {worker['events']}")
    print(f"worker with all that state: resident memory {worker['rss_worker_mib']:.0f} MiB "
          f"(+ ingest child {worker['rss_children_mib']:.0f} MiB); /metrics "
          f"{worker['metrics_seconds'] * 1000:.0f} ms, /api/kpis "
          f"{worker['api_kpis_seconds'] * 1000:.0f} ms (best of 3)")

    if args.latency_seconds > 0:
        latency = bench_latency(bootstrap, args.partitions, args.rate, args.latency_seconds,
                                workdir)
        print(f"\nlatency at {latency['rate']:.0f} events/s ({latency['events']} events, "
              f"polled every ~{latency['poll_interval_ms']:.1f} ms): "
              f"p50 {latency['p50_ms']:.1f} ms, p90 {latency['p90_ms']:.1f} ms, "
              f"p99 {latency['p99_ms']:.1f} ms, max {latency['max_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
