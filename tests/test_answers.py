"""Shared answers (streams.answers): one computation per interval, a limit on distinct ones.

The unit tests drive a clock by hand; the worker test asks a real ``kpi-engine worker`` for
``/api/kpis`` and ``/metrics`` from many threads at once and reads
``kpi_answers_computed_total`` (before: every request computed the report on the apply loop).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from streams.answers import Busy, SharedAnswers
from test_ingest_e2e import worker_setup  # noqa: F401  (the fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_computed_once_per_interval_and_key() -> None:
    clock, calls = Clock(), []
    answers = SharedAnswers(interval=1.0, budget=8, clock=clock)

    def compute(value: str):
        return lambda: calls.append(value) or value

    assert [answers.get("kpis", "now", compute("a")) for _ in range(50)] == ["a"] * 50
    assert calls == ["a"]
    clock.now += 0.99
    assert answers.get("kpis", "now", compute("b")) == "a"
    clock.now += 0.02
    assert answers.get("kpis", "now", compute("b")) == "b"
    assert answers.get("kpis", 123, compute("c")) == "c"  # another key: its own answer
    assert answers.get("metrics", "now", compute("d")) == "d"
    assert calls == ["a", "b", "c", "d"]


def test_distinct_computations_per_interval_are_limited() -> None:
    clock = Clock()
    answers = SharedAnswers(interval=1.0, budget=3, clock=clock)
    for as_of in range(3):
        answers.get("kpis", as_of, lambda: "x")
    with pytest.raises(Busy) as busy:
        answers.get("kpis", 99, lambda: "x")
    assert 0 < busy.value.retry_after <= 1.0
    assert answers.get("kpis", 1, lambda: "not again") == "x"  # computed ones are served
    clock.now += 1.0
    assert answers.get("kpis", 99, lambda: "y") == "y"


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
