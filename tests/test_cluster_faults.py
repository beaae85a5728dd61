"""Fault runs on a three-broker KRaft cluster (opt-in: ``-m fault``; a few minutes each).

The worker runs with ``replication_factor = 3`` and ``min_insync_replicas = 2`` on
:class:`engine.kafka_local.LocalKafkaCluster`; the same generated file is produced mid-fault,
and ``/api/kpis`` must equal ``kpi-engine report`` on the file, number by number, afterwards.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from reportdiff import diff_reports
from test_ingest_e2e import WorkerProcess

from engine.kafka_local import LocalKafkaCluster, free_port
from engine.timestamps import now_micros

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

CALENDAR = """
[calendar]
timezone = "Europe/Berlin"
fiscal_year_start_month = 4
[money]
currency = "EUR"
"""


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def cluster(tmp_path):
    with LocalKafkaCluster(tmp_path / "cluster", nodes=3) as kafka:
        yield kafka


def test_one_broker_of_three_killed_mid_stream_and_restarted(cluster, tmp_path) -> None:
    config_path = tmp_path / "worker.toml"
    port = free_port()
    config_path.write_text(CALENDAR + f"""
[kafka]
bootstrap_servers = "{cluster.bootstrap}"
[topics]
input = "crm.events"
dead_letter = "crm.events.dlq"
partitions = 3
replication_factor = 3
min_insync_replicas = 2
[worker]
app_id = "cluster-fault"
data_dir = "{tmp_path / 'data'}"
web_port = {port}
""")
    events = tmp_path / "events.jsonl"
    _cli("generate", "--seed", "5", "--days", "30", "--events", "20000", "--duplicates",
         "0.02", "--invalid", "0.01", "--config", str(config_path), "--out", str(events))
    lines = sum(1 for line in events.read_bytes().splitlines() if line.strip())

    worker = WorkerProcess(config_path, tmp_path / "worker.log", port).start()
    try:
        worker.wait_ready()
        producer = subprocess.Popen([sys.executable, "-m", "engine.cli", "produce", str(events),
                                     "--config", str(config_path)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        worker.wait_until(lambda: worker.events().get("read", 0) > lines // 10,
                          "a tenth of the stream")
        killed_at = time.monotonic()
        cluster.stop_node(1, kill=True)  # a lost machine, mid-stream
        time.sleep(15)
        cluster.start_node(1)
        assert producer.wait(timeout=300) == 0, producer.stderr.read()
        worker.wait_until(lambda: worker.events().get("read") == lines,
                          "every message to be accounted for")
        print(f"\nbroker killed mid-stream: all {lines} messages accounted for "
              f"{time.monotonic() - killed_at:.1f} s after the kill")
        time.sleep(2)
        as_of = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_micros() // 1_000_000))
        expected = orjson.loads(_cli("report", "--events", str(events), "--as-of", as_of,
                                     "--config", str(config_path)))
        differences = diff_reports(worker.report(as_of), expected)
        assert not differences, differences[:20]
        assert worker.stop(signal.SIGTERM) == 0
    finally:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()


def _setup(cluster, tmp_path, events_count: int = 20000, seed: int = 5) -> tuple:
    config_path = tmp_path / "worker.toml"
    port = free_port()
    config_path.write_text(CALENDAR + f"""
[kafka]
bootstrap_servers = "{cluster.bootstrap}"
[topics]
input = "crm.events"
dead_letter = "crm.events.dlq"
partitions = 3
replication_factor = 3
min_insync_replicas = 2
[worker]
app_id = "cluster-fault"
data_dir = "{tmp_path / 'data'}"
web_port = {port}
""")
    events = tmp_path / "events.jsonl"
    _cli("generate", "--seed", str(seed), "--days", "30", "--events", str(events_count),
         "--duplicates", "0.02", "--invalid", "0.01", "--config", str(config_path),
         "--out", str(events))
    lines = sum(1 for line in events.read_bytes().splitlines() if line.strip())
    return config_path, port, events, lines


def _assert_equal_to_file(worker: WorkerProcess, events: Path, config_path: Path) -> None:
    as_of = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_micros() // 1_000_000))
    expected = orjson.loads(_cli("report", "--events", str(events), "--as-of", as_of,
                                 "--config", str(config_path)))
    differences = diff_reports(worker.report(as_of), expected)
    assert not differences, differences[:20]


def test_the_whole_cluster_down_for_60_s_mid_stream(cluster, tmp_path) -> None:
    config_path, port, events, lines = _setup(cluster, tmp_path)
    worker = WorkerProcess(config_path, tmp_path / "worker.log", port).start()
    try:
        worker.wait_ready()
        _cli("produce", str(events), "--config", str(config_path))
        worker.wait_until(lambda: worker.events().get("read", 0) > 0, "the stream to start")
        down = time.monotonic()
        for node in range(3):
            cluster.stop_node(node, kill=True)
        time.sleep(60)
        for node in range(3):
            cluster._launch(node, *_java_and_lib(cluster))
        for node in range(3):
            cluster._wait_node(node)
        worker.wait_until(lambda: worker.events().get("read") == lines,
                          "every message to be accounted for")
        print(f"\ncluster down 60 s: all {lines} messages accounted for "
              f"{time.monotonic() - down:.1f} s after it went down "
              f"(worker pid unchanged: {worker.process.poll() is None})")
        _assert_equal_to_file(worker, events, config_path)
        assert worker.stop(signal.SIGTERM) == 0
    finally:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()


def _java_and_lib(cluster) -> tuple:
    from engine.kafka_local import ensure_kafka_jars, find_java
    return find_java(), ensure_kafka_jars(cluster.version, cluster.cache_dir)


def test_a_zombie_owner_paused_past_its_session_changes_no_count(cluster, tmp_path) -> None:
    """Two workers; one is SIGSTOPped for longer than its session timeout mid-stream (the
    other takes its partitions over), then SIGCONTinued: a zombie. The counts stay exact."""
    config_path, port, events, lines = _setup(cluster, tmp_path)
    first = WorkerProcess(config_path, tmp_path / "first.log", port).start()
    port2 = free_port()
    second = WorkerProcess(config_path, tmp_path / "second.log", port2,
                           ("--web-port", str(port2), "--data-dir",
                            str(tmp_path / "data-2"))).start()
    try:
        first.wait_ready()
        second.wait_ready()
        producer = subprocess.Popen([sys.executable, "-m", "engine.cli", "produce", str(events),
                                     "--config", str(config_path)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        second.wait_until(lambda: (second.events().get("read") or 0) > lines // 10,
                          "the stream to be under way")
        second.process.send_signal(signal.SIGSTOP)
        time.sleep(35)  # past the 20 s session timeout: the first takes over
        second.process.send_signal(signal.SIGCONT)
        assert producer.wait(timeout=300) == 0, producer.stderr.read()
        time.sleep(10)
        for worker in (first, second):
            worker.wait_until(lambda w=worker: w.get("/api/kpis")[0] == 200 and
                              w.events().get("read") == lines,
                              "every message to be accounted for, once")
        time.sleep(3)
        # restart both: the counts come back from the ledger, which the zombie also wrote to
        for worker in (first, second):
            assert worker.stop(signal.SIGTERM) == 0
        first = WorkerProcess(config_path, tmp_path / "first-2.log", port).start()
        first.wait_until(lambda: first.get("/api/kpis")[0] == 200, "the restarted worker")
        first.wait_until(lambda: first.events().get("read") == lines, "all counted once")
        _assert_equal_to_file(first, events, config_path)
        assert first.stop(signal.SIGTERM) == 0
    finally:
        for worker in (first, second):
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)
                worker.process.kill()
