"""Answers of the HTTP views, computed at most once per interval and shared between requests.

Why: the report, the metrics exposition and the wallboard's live document are computed on the
event loop that owns the KPI state (they must never see a shard half-way through an apply
round), so every computation holds up the apply agent. Ten wallboards and a Prometheus polling
the same worker used to cost one full computation per request. Now an answer is computed once
per :data:`ANSWER_INTERVAL_SECONDS` for each distinct request (endpoint and parameters) and
served to every request that asks within that interval; an answer is thus at most that old
(it carries its own ``as_of``). And at most :data:`COMPUTATIONS_PER_INTERVAL` distinct answers
are computed per interval: a request for yet another one (e.g. a client stepping ``as_of``
through history in a tight loop) gets ``503`` with ``Retry-After`` instead of a share of the
apply agent's time. ``kpi_answers_computed_total{endpoint}`` counts the computations.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

#: How long a computed answer is served again (seconds); ``KPI_ANSWER_INTERVAL_SECONDS``.
ANSWER_INTERVAL_SECONDS = float(os.environ.get("KPI_ANSWER_INTERVAL_SECONDS", "1.0"))
#: Distinct answers computed per interval at most, over all endpoints.
COMPUTATIONS_PER_INTERVAL = 8
#: Answers kept (the most recently used).
MAX_KEPT = 64


class Busy(Exception):
    """Too many distinct answers were computed in this interval; retry after ``retry_after``."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"busy: retry after {retry_after:.1f} s")
        self.retry_after = retry_after


class SharedAnswers:
    """Computed answers by ``(endpoint, key)``, each reused for ``interval`` seconds."""

    def __init__(self, interval: float = ANSWER_INTERVAL_SECONDS,
                 budget: int = COMPUTATIONS_PER_INTERVAL, counter: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.budget = budget
        self.counter = counter  # a prometheus Counter with an ``endpoint`` label, or None
        self.clock = clock
        self._answers: OrderedDict[tuple[str, Hashable], tuple[float, Any]] = OrderedDict()
        self._window_start = -float("inf")
        self._computed_in_window = 0

    def get(self, endpoint: str, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The answer for ``(endpoint, key)``: the one computed within the interval, else
        ``compute()`` (synchronously: no other task runs meanwhile). Raises :class:`Busy`."""
        now = self.clock()
        slot = (endpoint, key)
        kept = self._answers.get(slot)
        if kept is not None and now - kept[0] < self.interval:
            self._answers.move_to_end(slot)
            return kept[1]
        if now - self._window_start >= self.interval:
            self._window_start, self._computed_in_window = now, 0
        if self._computed_in_window >= self.budget:
            raise Busy(self._window_start + self.interval - now)
        self._computed_in_window += 1
        answer = compute()
        if self.counter is not None:
            self.counter.labels(endpoint=endpoint).inc()
        self._answers[slot] = (self.clock(), answer)
        self._answers.move_to_end(slot)
        while len(self._answers) > MAX_KEPT:
            self._answers.popitem(last=False)
        return answer
