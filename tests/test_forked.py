"""Answers computed in a forked child (streams.forked): a snapshot, and the loop stays free.

Each test runs a real fork. What users rely on: the answer is the state as it was when asked
(a round applied meanwhile does not leak into it half-way), the event loop keeps applying
while a long answer is computed (before: blocked for the whole computation), a failing or
hanging computation is reported and cleaned up, and a signal meant for the child does not
reach the worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import orjson
import pytest

from streams.answers import SharedAnswers, in_process
from streams.forked import ForkedError, run_forked

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_the_answer_is_the_state_when_asked_while_the_loop_goes_on_changing_it() -> None:
    state = {"applied": list(range(1000))}

    def report() -> bytes:
        busy(0.3)  # long enough for the loop to apply rounds meanwhile
        return orjson.dumps({"applied": len(state["applied"]), "last": state["applied"][-1]})

    async def main() -> tuple[dict, int]:
        async def apply_rounds() -> int:
            rounds = 0
            while True:
                state["applied"].extend(range(10))
                rounds += 1
                await asyncio.sleep(0.005)

        applier = asyncio.create_task(apply_rounds())
        await asyncio.sleep(0)
        answer = orjson.loads(await run_forked(report))
        applier.cancel()
        rounds = len(state["applied"]) - 1000
        return answer, rounds

    answer, applied_meanwhile = asyncio.run(main())
    # the child saw the state as it was at the fork: at most the first round had been applied
    assert answer["applied"] in (1000, 1010)
    # and the loop went on applying while the child computed (0.3 s, rounds every 5 ms)
    assert applied_meanwhile >= 10 * 10


@pytest.mark.parametrize("runner", ["forked", "in_process"])
def test_the_loop_is_free_while_an_answer_is_computed(runner: str) -> None:
    """The shared answers with each runner: the forked one leaves the loop to other tasks
    (the apply agent) while a 0.5 s answer is computed; in the process it cannot."""

    async def main() -> int:
        answers = SharedAnswers(runner=run_forked if runner == "forked" else in_process)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        before = ticks
        body = await answers.get("kpis", "now", lambda: busy(0.5) or b"report")
        assert body == b"report"
        task.cancel()
        return ticks - before

    ticks = asyncio.run(main())
    if runner == "forked":
        assert ticks >= 20
    else:
        assert ticks <= 2


def test_a_failing_computation_is_reported_with_its_traceback() -> None:
    def broken() -> bytes:
        raise ValueError("a KPI that cannot be computed")

    with pytest.raises(ForkedError, match="ValueError: a KPI that cannot be computed"):
        asyncio.run(run_forked(broken))
    # and the next one works: nothing was left behind
    assert asyncio.run(run_forked(lambda: b"fine")) == b"fine"


def test_a_hanging_computation_is_killed_at_its_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"

    def hang() -> bytes:
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)
        return b"never"

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(run_forked(hang, timeout=0.5))
    assert time.monotonic() - started < 5
    pid = int(pid_file.read_text())
    with pytest.raises(ChildProcessError):  # killed and reaped: no zombie left
        os.waitpid(pid, os.WNOHANG)


def test_a_signal_to_the_child_does_not_reach_the_worker(tmp_path: Path) -> None:
    """The child shares the loop's wake-up socket; before its signals were reset, a SIGTERM
    sent to it would have been written there and stopped the worker."""
    pid_file = tmp_path / "child.pid"

    def wait_to_be_killed() -> bytes:
        pid_file.write_text(str(os.getpid()))
        time.sleep(30)
        return b"never"

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        try:
            computing = asyncio.create_task(run_forked(wait_to_be_killed))
            while not pid_file.exists() or not pid_file.read_text():
                await asyncio.sleep(0.01)
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            with pytest.raises(ForkedError, match="died without one"):
                await computing
            await asyncio.sleep(0.2)
            return stopped.is_set()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    assert asyncio.run(main()) is False


def test_a_report_from_a_child_after_warming_equals_the_one_computed_here() -> None:
    """Months of generated history: the sums made by ``warm_sums`` in the parent are what the
    child reads (the month caches are there before the fork), and its report equals the one
    computed in the process, number by number."""
    from datetime import datetime, timedelta, timezone

    from engine.config import Config
    from engine.core import Core
    from engine.decode import decode
    from engine.event import Rejection
    from engine.report import build_report
    from engine.tooling.generator import history_lines, settings_for
    from engine.view import warm_sums

    config = Config()
    end = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)
    start = end - timedelta(days=95)
    cores = [Core(config.calendar, config.pipeline) for _ in range(2)]
    for i, line in enumerate(history_lines(settings_for(config, seed=3), start, end)):
        event = decode(line, currency=config.money.currency,
                       max_event_bytes=config.limits.max_event_bytes)
        if not isinstance(event, Rejection):
            cores[i % 2].apply(event)
    as_of = int(end.timestamp() * 1_000_000)
    assert all(not core.month_cache for core in cores)
    warm_sums(cores, as_of)
    assert all(len(core.month_cache) >= 2 for core in cores)  # the complete months before
    from_child = asyncio.run(run_forked(
        lambda: orjson.dumps(build_report(cores, as_of, config, None))))
    assert orjson.loads(from_child) == orjson.loads(orjson.dumps(
        build_report(cores, as_of, config, None)))
