"""The worker and its ingest child process live and die together (``streams.ingest_process``).

A ``kill -9`` of the worker must not leave an ingest process forwarding behind it, a clean stop
must stop the child cleanly too, and a worker whose ingest stage died must not go on as if it
were complete.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from test_ingest_e2e import WorkerProcess

from engine.kafka_local import free_port

pytestmark = pytest.mark.kafka


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def ingest_child(pid: int) -> int | None:
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            return child
    return None


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def wait_for(condition, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def start_worker(kafka_broker, unique_name, tmp_path):
    config = tmp_path / "worker.toml"
    port = free_port()
    config.write_text(f"""
[kafka]
bootstrap_servers = "{kafka_broker.bootstrap}"
[topics]
input = "{unique_name('in')}"
dead_letter = "{unique_name('dlq')}"
partitions = 2
[worker]
app_id = "{unique_name('app')}"
data_dir = "{tmp_path / 'data'}"
web_host = "127.0.0.1"
web_port = {port}
""")
    started: list[WorkerProcess] = []

    def start(label: str = "worker") -> WorkerProcess:
        worker = WorkerProcess(config, tmp_path / f"{label}.log", port).start()
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=30)


def test_kill_9_of_the_worker_takes_its_ingest_process_along(start_worker) -> None:
    worker = start_worker()
    assert worker.process is not None
    child = ingest_child(worker.process.pid)
    assert child is not None
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: not alive(child), "the ingest process to die with the worker")


def test_a_clean_stop_stops_the_ingest_process_too(start_worker) -> None:
    worker = start_worker()
    assert worker.process is not None
    child = ingest_child(worker.process.pid)
    assert child is not None
    assert worker.stop(signal.SIGTERM) == 0
    assert not alive(child)


def test_a_worker_whose_ingest_process_died_stops_and_says_why(start_worker) -> None:
    worker = start_worker()
    assert worker.process is not None
    child = ingest_child(worker.process.pid)
    assert child is not None
    os.kill(child, signal.SIGKILL)
    assert worker.process.wait(timeout=60) != 0
    assert "ingest process exited" in worker.log_tail(200)


def test_a_sigterm_to_the_whole_process_group_is_a_clean_stop(start_worker) -> None:
    """systemd (its default ``KillMode``), the demo and a shell's job control signal the
    worker's whole process group, so its ingest child gets the ``SIGTERM`` too and may finish
    first. Before, the worker took the child's clean exit for a crash ("the ingest process
    exited with status 0", exit status 1; seen stopping the demo), and a supervisor would
    report a failure. The child is signalled first here, the worst order."""
    worker = start_worker()
    assert worker.process is not None
    child = ingest_child(worker.process.pid)
    assert child is not None
    os.kill(child, signal.SIGTERM)
    time.sleep(0.5)  # the worker's watch sees the child gone
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()


def test_an_ingest_process_stopped_alone_still_stops_the_worker(start_worker) -> None:
    """A clean exit of the child with no stop of the worker after it (the grace for a process
    group's SIGTERM passes) is still a crash: the worker never runs without its ingest."""
    worker = start_worker()
    assert worker.process is not None
    child = ingest_child(worker.process.pid)
    assert child is not None
    os.kill(child, signal.SIGTERM)
    assert worker.process.wait(timeout=60) != 0
    assert "ingest process exited with status 0" in worker.log_tail(200)
