"""The ingest stage in a child process of the worker: the second CPU core for the first stage.

Why: a Python process does its work on one core at a time, and the two stages share nothing
but Kafka. The apply stage (and Faust) stay in the worker process; :class:`~streams.ingest.Ingest`
runs unchanged in a child, judging and forwarding the next batches while the worker applies
the last ones. Measured on the 2-core reference machine (``benchmarks/bench_worker.py``), a
600k-event load went from ~47-63k events/s (one process, CPU-bound) to ~80k.

What crosses the process boundary is only what the worker reports: the child sends its
counters (messages consumed, invalid by reason, dead letters sent) through a pipe, and the
worker adds them to its Prometheus metrics.

Lifecycle, so that the pair behaves like one process:

- the child is started with the Faust app and stopped with it: ``SIGTERM``, upon which it
  finishes the batch in flight and commits its offsets, as the in-process stage would;
- it ignores ``SIGINT`` (a Ctrl-C reaches the whole process group; the worker decides);
- it dies with the worker (``PR_SET_PDEATHSIG`` on Linux, and a parent check every second
  elsewhere), so a ``kill -9`` of the worker leaves no ingest behind;
- if it exits on its own, the worker stops too: with the same status after a Kafka failure
  (the exit-on-Kafka-failure rule of :mod:`streams.kafka`), else as a crash; a clean exit
  (status 0, a ``SIGTERM`` to the whole process group) first leaves the worker
  :data:`GROUP_STOP_GRACE_SECONDS` to start its own stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from collections import Counter
from typing import Any

from mode import Service

from engine.config import Config
from streams.kafka import EXIT_KAFKA_FAILURE, exit_on_kafka_failure
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

EXIT_CRASH = 1
STOP_TIMEOUT_SECONDS = 60.0
#: How long a child that stopped cleanly (on a SIGTERM to the process group) leaves the worker
#: to start its own stop before its exit counts as a crash.
GROUP_STOP_GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


class IngestProcess(Service):
    """Runs :class:`streams.ingest.Ingest` in a child process and relays its counters."""

    def __init__(self, app: Any, config: Config, metrics: WorkerMetrics,
                 log_level: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.config = config
        self.metrics = metrics
        self.log_level = log_level
        self.process: Any = None
        self._conn: Any = None
        self._stopping = False
        self._watcher: asyncio.Task | None = None

    async def on_start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe(duplex=False)
        level = self.log_level if self.log_level is not None else logging.getLogger().level
        self.process = context.Process(target=child_main, name="kpi-ingest", daemon=True,
                                       args=(self.config, child_end, os.getpid(), level))
        self.process.start()
        child_end.close()
        asyncio.get_running_loop().add_reader(self._conn.fileno(), self._receive)
        self._watcher = asyncio.ensure_future(self._watch())

    def _receive(self) -> None:
        try:
            while self._conn.poll():
                message = self._conn.recv()
                if message[0] == "lag":
                    self.metrics.set_lag(message[1])
                    continue
                consumed, invalid, dead_letters = message
                self.metrics.count_ingest(consumed, Counter(invalid))
                self.metrics.count_dead_letters(dead_letters)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self._conn.fileno())

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.2)
            code = self.process.exitcode
            if code is None or self._stopping:
                continue
            if code == EXIT_KAFKA_FAILURE:
                exit_on_kafka_failure(RuntimeError("the ingest process could not forward"))
            if code == 0:
                # It stopped on a SIGTERM. Sent to the whole process group (systemd's default
                # KillMode, the demo, job control), the worker has one too and is stopping:
                # a clean stop, not a crash, if it gets here in time.
                log.info("the ingest process stopped on a SIGTERM; waiting %.0f s for the "
                         "worker's own stop", GROUP_STOP_GRACE_SECONDS)
                await asyncio.sleep(GROUP_STOP_GRACE_SECONDS)
                if self._stopping:
                    return
            log.critical("the ingest process exited with status %s", code)
            await self.app.crash(RuntimeError(f"the ingest process exited with status {code}"))
            return

    async def on_stop(self) -> None:
        """Stop the child as the in-process stage stops: after its batch, offsets committed."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        process = self.process
        if process is None:
            return
        if process.is_alive():
            process.terminate()
            await asyncio.get_running_loop().run_in_executor(None, process.join,
                                                             STOP_TIMEOUT_SECONDS)
            if process.is_alive():
                log.warning("the ingest process did not stop in time; killing it")
                process.kill()
                process.join(5)
        self._receive()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._conn.fileno())


class PipeMetrics:
    """The ingest stage's counters, sent to the worker process (same calls as WorkerMetrics)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pending: tuple[int, Counter[str]] | None = None

    def count_ingest(self, consumed: int, invalid_by_reason: Counter[str]) -> None:
        self.pending = (consumed, invalid_by_reason)

    def count_dead_letters(self, n: int) -> None:
        consumed, invalid = self.pending or (0, Counter())
        self.pending = None
        self.conn.send((consumed, dict(invalid), n))

    def set_lag(self, lag: dict[tuple[str, int], int]) -> None:
        self.conn.send(("lag", lag))


def child_main(config: Config, conn: Any, parent_pid: int, log_level: int) -> None:
    """Entry point of the child process."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    try:
        asyncio.run(_run(config, conn, parent_pid))
    except Exception:
        log.exception("the ingest process failed")
        os._exit(EXIT_CRASH)


async def _run(config: Config, conn: Any, parent_pid: int) -> None:
    from streams.heap import HeapKeeper
    from streams.ingest import Ingest

    HeapKeeper.configure()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    crashed: list[BaseException] = []

    async def on_crash(exc: BaseException) -> None:
        crashed.append(exc)
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    ingest = Ingest(config, PipeMetrics(conn), on_crash=on_crash)
    await ingest.start()
    while not stop.is_set():
        if os.getppid() != parent_pid:  # the worker is gone (where PDEATHSIG is unavailable)
            os._exit(EXIT_CRASH)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await ingest.stop()
    if crashed:
        os._exit(EXIT_CRASH)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
