"""Shared answers (streams.answers): one computation per interval, a limit on distinct ones.

The unit tests drive a clock by hand; the worker test asks a real ``kpi-engine worker`` for
``/api/kpis`` and ``/metrics`` from many threads at once and reads
``kpi_answers_computed_total`` (before: every request computed the report on the apply loop).
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from streams.answers import Busy, SharedAnswers, in_process
from test_ingest_e2e import worker_setup  # noqa: F401  (the fixture)


LOOP = asyncio.new_event_loop()


def ask(answers: SharedAnswers, endpoint: str, key, compute):
    """One request, run to its end on the tests' loop."""
    return LOOP.run_until_complete(answers.get(endpoint, key, compute))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_computed_once_per_interval_and_key() -> None:
    clock, calls = Clock(), []
    answers = SharedAnswers(interval=1.0, budget=8, clock=clock, runner=in_process)

    def compute(value: str):
        return lambda: calls.append(value) or value

    assert [ask(answers, "kpis", "now", compute("a")) for _ in range(50)] == ["a"] * 50
    assert calls == ["a"]
    clock.now += 0.99
    assert ask(answers, "kpis", "now", compute("b")) == "a"
    clock.now += 0.02
    assert ask(answers, "kpis", "now", compute("b")) == "b"
    assert ask(answers, "kpis", 123, compute("c")) == "c"  # another key: its own answer
    assert ask(answers, "metrics", "now", compute("d")) == "d"
    assert calls == ["a", "b", "c", "d"]


def test_distinct_computations_per_interval_are_limited() -> None:
    clock = Clock()
    answers = SharedAnswers(interval=1.0, budget=3, clock=clock, runner=in_process)
    for as_of in range(3):
        ask(answers, "kpis", as_of, lambda: "x")
    with pytest.raises(Busy) as busy:
        ask(answers, "kpis", 99, lambda: "x")
    assert 0 < busy.value.retry_after <= 1.0
    assert ask(answers, "kpis", 1, lambda: "not again") == "x"  # computed ones are served
    clock.now += 1.0
    assert ask(answers, "kpis", 99, lambda: "y") == "y"


class Counted:
    """A stand-in for a labelled prometheus Counter: counts per endpoint."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def labels(self, endpoint: str) -> "Counted":
        self._endpoint = endpoint
        return self

    def inc(self) -> None:
        self.counts[self._endpoint] = self.counts.get(self._endpoint, 0) + 1


def test_expensive_answers_take_at_most_their_share_of_the_loop() -> None:
    """Answers that cost 2 s each, asked every 0.5 s by two endpoints for 10 minutes: the
    time spent computing stays within the share (plus the one-off credit), every request is
    answered or told when to come back, and the answers served stale are counted."""
    clock, stale, computed = Clock(), Counted(), Counted()

    def costing(seconds: float, value: str):
        def compute() -> str:
            clock.now += seconds  # the loop is blocked for that long
            return value
        return compute

    answers = SharedAnswers(interval=1.0, budget=8, clock=clock, share=0.25, credit=1.0,
                            runner=in_process, timer=clock, stale_counter=stale, counter=computed)
    start, spent, served, refused = clock.now, 0.0, 0, 0
    while clock.now - start < 600:
        for endpoint in ("kpis", "metrics"):
            before = clock.now
            try:
                ask(answers, endpoint, "now", costing(2.0, endpoint))
                served += 1
            except Busy as exc:
                assert exc.retry_after > 0
                refused += 1
            spent += clock.now - before
        clock.now += 0.5
    elapsed = clock.now - start
    assert spent <= 0.25 * elapsed + 1.0 + 2.0  # the share, the credit, one answer's overrun
    assert spent >= 0.2 * elapsed  # and the share is used, not wasted
    # only until the second endpoint's first answer: then each has one to serve
    assert refused <= 8
    assert stale.counts["kpis"] > 0 and stale.counts["metrics"] > 0
    assert served > 1000
    # the credit goes to the most overdue answer, not to whoever asks first (here: always
    # /api/kpis), so neither endpoint is served one stale answer for ever
    assert abs(computed.counts["kpis"] - computed.counts["metrics"]) <= 1
    assert computed.counts["metrics"] >= 0.2 * 600 / 2 / 2 * 0.9


def test_with_credit_to_spare_each_answer_is_computed_when_asked() -> None:
    """The wallboard asks every 5 s, Prometheus every 15 s, answers cost 50 ms: each request
    gets an answer computed for it. Found by the session-5 soak: /api/kpis answers were 5 s
    old from its first minute on, because the credit was left to /metrics, which was not
    asking (it had been asked and answered fresh)."""
    clock = Clock()

    def costing(value: str):
        def compute() -> str:
            clock.now += 0.05
            return f"{value}@{clock.now:.2f}"
        return compute

    answers = SharedAnswers(interval=1.0, budget=8, clock=clock, share=0.25, credit=1.0,
                            runner=in_process, timer=clock)
    start = clock.now
    for second in range(0, 300, 5):
        clock.now = start + second
        for endpoint in (("metrics",) if second % 15 == 0 else ()) + ("kpis",):
            asked = clock.now
            answer = ask(answers, endpoint, "now", costing(endpoint))
            computed_at = float(answer.partition("@")[2])
            assert asked - computed_at < 1.0, (endpoint, second, answer)  # not a stale one


def test_a_request_without_any_answer_waits_for_the_credit() -> None:
    clock = Clock()

    def costing(seconds: float):
        def compute() -> str:
            clock.now += seconds
            return "x"
        return compute

    answers = SharedAnswers(interval=1.0, budget=8, clock=clock, share=0.25, credit=1.0,
                            runner=in_process, timer=clock)
    # credit 1 - 3 = -2 s owed; the share accrues over all the time, the 3 s included
    assert ask(answers, "kpis", "now", costing(3.0)) == "x"
    clock.now += 1.0  # -2 + 0.25 * (3 + 1) = -1 s
    assert ask(answers, "kpis", "now", costing(3.0)) == "x"  # the kept one, stale, not computed
    with pytest.raises(Busy) as busy:
        ask(answers, "kpis", "2026-01-01", costing(3.0))
    assert busy.value.retry_after == pytest.approx(1 / 0.25)
    clock.now += 4.01
    assert ask(answers, "kpis", "2026-01-01", costing(0.1)) == "x"  # paid back: computed


def test_cheap_answers_never_wait_for_the_share() -> None:
    """A worker with little state: 10 ms answers, asked 20 times a second with new keys,
    are computed every time up to the per-interval limit, never refused for the share."""
    clock = Clock()
    answers = SharedAnswers(interval=1.0, budget=8, clock=clock, share=0.25, credit=1.0,
                            runner=in_process, timer=clock)

    def costing() -> str:
        clock.now += 0.01
        return "x"

    for step in range(200):
        ask(answers, "kpis", step // 20 * 1000 + step % 5, costing)
        clock.now += 0.05


@pytest.mark.kafka
def test_concurrent_requests_to_a_worker_share_one_computation(worker_setup) -> None:
    from datetime import datetime, timezone

    import orjson
    from test_ingest_e2e import all_accounted, key_of, produce, total, valid_events

    worker = worker_setup["new_worker"]("answers")
    worker.wait_ready()
    events = valid_events(96, datetime.now(timezone.utc), prefix=worker_setup["app_id"])
    produce(worker_setup["bootstrap"], worker_setup["input"],
            [(key_of(e), orjson.dumps(e)) for e in events])
    worker.wait_until(all_accounted(worker, len(events)), "every event to be accounted for")

    def computed() -> dict[str, float]:
        samples = worker.metrics()
        return {endpoint: total(samples, "kpi_answers_computed_total", endpoint=endpoint)
                for endpoint in ("kpis", "metrics")}

    before = computed()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: worker.get("/api/kpis"), range(40)))
    time.sleep(1.2)  # /metrics is shared too: a fresh reading
    after = computed()
    assert all(status == 200 for status, _ in results)
    bodies = {body for _, body in results}
    # 40 requests within a few seconds: a handful of computations, not 40.
    assert 1 <= after["kpis"] - before["kpis"] <= 10
    assert len(bodies) == after["kpis"] - before["kpis"]
    assert all("windows" in json.loads(body) for body in bodies)
    # Many different as_of values at once: some are refused, with Retry-After, none fail.
    stamps = [f"2026-01-{day:02d}T00:00:00Z" for day in range(1, 31)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = [status for status, _ in pool.map(
            lambda t: worker.get(f"/api/kpis?as_of={t}"), stamps)]
    assert set(statuses) <= {200, 503} and 200 in statuses
    # the apply stage's lag is exported per bundles partition, 0 when nothing waits
    def apply_lag() -> list[float]:
        return [v for (n, _), v in worker.metrics().items() if n == "kpi_apply_lag_bundles"]

    worker.wait_until(lambda: apply_lag() and set(apply_lag()) == {0.0},
                      "kpi_apply_lag_bundles to read 0 for the bundles partitions")
