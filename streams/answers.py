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

Why a share of the loop as well (:data:`LOOP_SHARE`): an answer's cost grows with the state in
the windows it covers. In the 30-minute soak (docs/benchmarks.md) a worker with millions of
events "today" spent seconds per ``/api/kpis`` and ``/metrics`` answer; asked every 5 and 15 s
it left the apply stage almost no time, and its backlog grew for as long as traffic flowed.
So computing answers may take at most :data:`LOOP_SHARE` of the loop's time, kept as a credit
of seconds that grows at that rate (up to :data:`CREDIT_SECONDS`) and that each computation
spends. While the credit is spent, a request is served the last answer computed for it,
however old (its ``as_of`` says when), or gets ``503`` with ``Retry-After`` if there is none.
Cheap answers never notice; expensive ones come less often instead of starving the stage that
makes them right. When the credit comes back, it goes to the answer most overdue among those
asked in the last :data:`ASKED_SECONDS` (none yet, else the oldest), not to whichever request
comes first: otherwise the endpoint asked most often (the wallboard's) would take every
computation and another (Prometheus's scrape) would be served the same stale answer forever.
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
#: Share of the event loop's time that computing answers may take in the long run; the rest
#: is the apply stage's (``KPI_ANSWER_LOOP_SHARE``).
LOOP_SHARE = float(os.environ.get("KPI_ANSWER_LOOP_SHARE", "0.25"))
#: Computation time that may be spent at once before the share applies (a burst).
CREDIT_SECONDS = 1.0
#: An answer asked within this many seconds is still wanted (it competes for the credit).
ASKED_SECONDS = 30.0


class Busy(Exception):
    """No answer can be computed now; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"busy: retry after {retry_after:.1f} s")
        self.retry_after = retry_after


class SharedAnswers:
    """Computed answers by ``(endpoint, key)``, each reused for ``interval`` seconds."""

    def __init__(self, interval: float = ANSWER_INTERVAL_SECONDS,
                 budget: int = COMPUTATIONS_PER_INTERVAL, counter: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 share: float = LOOP_SHARE, credit: float = CREDIT_SECONDS,
                 timer: Callable[[], float] = time.perf_counter,
                 stale_counter: Any = None) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"the loop share of answers must be in (0, 1], not {share}")
        self.interval = interval
        self.budget = budget
        self.counter = counter  # a prometheus Counter with an ``endpoint`` label, or None
        self.clock = clock
        self.share = share
        self.capacity = credit
        self.timer = timer  # measures what a computation cost
        #: a prometheus Counter (``endpoint`` label) of answers served older than the interval
        #: because the credit was spent, or None
        self.stale_counter = stale_counter
        self._answers: OrderedDict[tuple[str, Hashable], tuple[float, Any]] = OrderedDict()
        self._window_start = -float("inf")
        self._computed_in_window = 0
        self._credit = credit
        self._credit_at = clock()
        #: when each answer was last asked for (the ones that compete for the credit)
        self._asked: dict[tuple[str, Hashable], float] = {}

    def credit(self) -> float:
        """Seconds of computation that may be spent now (negative: owed)."""
        now = self.clock()
        self._credit = min(self.capacity, self._credit + (now - self._credit_at) * self.share)
        self._credit_at = now
        return self._credit

    def get(self, endpoint: str, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The answer for ``(endpoint, key)``: the one computed within the interval, else
        ``compute()`` (synchronously: no other task runs meanwhile). Raises :class:`Busy`."""
        now = self.clock()
        slot = (endpoint, key)
        kept = self._answers.get(slot)
        self._asked[slot] = now
        if kept is not None and now - kept[0] < self.interval:
            self._answers.move_to_end(slot)
            return kept[1]
        credit = self.credit()
        if credit < 0 or (kept is not None and self._more_overdue_than(slot, kept[0], now)):
            if kept is not None:
                if self.stale_counter is not None:
                    self.stale_counter.labels(endpoint=endpoint).inc()
                self._answers.move_to_end(slot)
                return kept[1]
            raise Busy(-credit / self.share)
        if now - self._window_start >= self.interval:
            self._window_start, self._computed_in_window = now, 0
        if self._computed_in_window >= self.budget:
            raise Busy(self._window_start + self.interval - now)
        self._computed_in_window += 1
        started = self.timer()
        answer = compute()
        self._credit -= self.timer() - started
        if self.counter is not None:
            self.counter.labels(endpoint=endpoint).inc()
        self._answers[slot] = (self.clock(), answer)
        self._answers.move_to_end(slot)
        while len(self._answers) > MAX_KEPT:
            self._answers.popitem(last=False)
        return answer

    def _more_overdue_than(self, slot: tuple[str, Hashable], computed_at: float,
                           now: float) -> bool:
        """True if another answer asked lately is more overdue than ``slot``'s (computed at
        ``computed_at``): it has none yet, or an older one; it gets the credit first."""
        for other, asked_at in list(self._asked.items()):
            if now - asked_at > ASKED_SECONDS:
                del self._asked[other]
                continue
            if other == slot:
                continue
            kept = self._answers.get(other)
            if kept is None or kept[0] < computed_at:
                return True
        return False
