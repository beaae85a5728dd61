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

Why answers are computed in a forked child (:mod:`streams.forked`), one at a time: a child
sees the state exactly as it is between two apply rounds and computes while the loop goes on
applying; a request for an answer being computed waits for that computation, and one whose
last answer is older than the interval while another is computed is served that last answer.

Why a share of the time as well (:data:`LOOP_SHARE`, :data:`FORKED_SHARE`): an answer's cost
grows with the state in the windows it covers. In the 30-minute soak (docs/benchmarks.md) a
worker with millions of events "today" spent seconds per ``/api/kpis`` and ``/metrics``
answer; asked every 5 and 15 s it left the apply stage almost no time, and its backlog grew
for as long as traffic flowed.
So computing answers may take at most :data:`LOOP_SHARE` of the loop's time, kept as a credit
of seconds that grows at that rate (up to :data:`CREDIT_SECONDS`) and that each computation
spends. While the credit is spent, a request is served the last answer computed for it,
however old (its ``as_of`` says when), or gets ``503`` with ``Retry-After`` if there is none.
Cheap answers never notice; expensive ones come less often instead of starving the stage that
makes them right. When the credit comes back, it goes to the answer most overdue among those
asked in the last :data:`ASKED_SECONDS` and not computed since (none yet, else the oldest),
not to whichever request comes first: otherwise the endpoint asked most often (the
wallboard's) would take every computation and another (Prometheus's scrape) would be served
the same stale answer forever.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from streams import forked

#: How long a computed answer is served again (seconds); ``KPI_ANSWER_INTERVAL_SECONDS``.
ANSWER_INTERVAL_SECONDS = float(os.environ.get("KPI_ANSWER_INTERVAL_SECONDS", "1.0"))
#: Distinct answers computed per interval at most, over all endpoints.
COMPUTATIONS_PER_INTERVAL = 8
#: Answers kept (the most recently used).
MAX_KEPT = 64
#: Share of the event loop's time that computing answers in the process may take in the long
#: run; the rest is the apply stage's (``KPI_ANSWER_LOOP_SHARE``).
LOOP_SHARE = float(os.environ.get("KPI_ANSWER_LOOP_SHARE", "0.25"))
#: Share of the time a forked child may spend computing answers (:mod:`streams.forked`): the
#: loop is free meanwhile, but the child takes a core and copies the pages it reads.
FORKED_SHARE = float(os.environ.get("KPI_ANSWER_FORKED_SHARE", "0.5"))

Runner = Callable[[Callable[[], bytes]], Awaitable[bytes]]


async def in_process(compute: Callable[[], bytes]) -> bytes:
    """Compute on the event loop (no other task runs meanwhile)."""
    return compute()


def runner_for(mode: str = "fork") -> tuple[Runner, float]:
    """How answers are computed (``[worker] answers``: ``fork`` where the platform can, else
    ``loop``), and the share of time they may take."""
    if mode == "fork" and forked.AVAILABLE:
        return forked.run_forked, FORKED_SHARE
    return in_process, LOOP_SHARE
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
    """Computed answers (bytes) by ``(endpoint, key)``, each reused for ``interval`` seconds."""

    def __init__(self, interval: float = ANSWER_INTERVAL_SECONDS,
                 budget: int = COMPUTATIONS_PER_INTERVAL, counter: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 share: float | None = None, credit: float = CREDIT_SECONDS,
                 timer: Callable[[], float] = time.perf_counter,
                 stale_counter: Any = None, runner: Runner | None = None,
                 mode: str = "fork") -> None:
        default, default_share = runner_for(mode)
        self.runner: Runner = runner if runner is not None else default
        share = share if share is not None else (
            default_share if runner is None else LOOP_SHARE)
        if not 0 < share <= 1:
            raise ValueError(f"the time share of answers must be in (0, 1], not {share}")
        self.interval = interval
        self.budget = budget
        self.counter = counter  # a prometheus Counter with an ``endpoint`` label, or None
        self.clock = clock
        self.share = share
        self.capacity = credit
        self.timer = timer  # measures what a computation cost
        #: a prometheus Counter (``endpoint`` label) of answers served older than the interval
        #: because the credit was spent or another answer was being computed, or None
        self.stale_counter = stale_counter
        self._answers: OrderedDict[tuple[str, Hashable], tuple[float, bytes]] = OrderedDict()
        self._window_start = -float("inf")
        self._computed_in_window = 0
        self._credit = credit
        self._credit_at = clock()
        #: when each answer was last asked for
        self._asked: dict[tuple[str, Hashable], float] = {}
        #: answers asked for and not computed (served stale, or refused) since they were last
        #: computed: the ones that compete for the credit
        self._waiting: set[tuple[str, Hashable]] = set()
        #: answers being computed, shared by the requests that ask meanwhile
        self._pending: dict[tuple[str, Hashable], asyncio.Future[bytes]] = {}
        self._computing = False
        self._one_at_a_time = asyncio.Lock()

    def credit(self) -> float:
        """Seconds of computation that may be spent now (negative: owed)."""
        now = self.clock()
        self._credit = min(self.capacity, self._credit + (now - self._credit_at) * self.share)
        self._credit_at = now
        return self._credit

    async def get(self, endpoint: str, key: Hashable, compute: Callable[[], bytes],
                  prepare: Callable[[], None] | None = None) -> bytes:
        """The answer for ``(endpoint, key)``: the one computed within the interval, else the
        one being computed, else ``compute()`` run by the runner (one at a time), else, when
        that must wait, the last one however old. Raises :class:`Busy`. ``prepare`` runs
        here, on the loop, right before a computation (caches the computation reads, which a
        forked child could not keep)."""
        now = self.clock()
        slot = (endpoint, key)
        kept = self._answers.get(slot)
        self._asked[slot] = now
        if len(self._asked) > 4 * MAX_KEPT:  # many distinct as_of values: forget the oldest
            newest = sorted(self._asked.items(), key=lambda item: item[1])[-MAX_KEPT:]
            self._asked = {s: t for s, t in newest if now - t <= ASKED_SECONDS}
        if kept is not None and now - kept[0] < self.interval:
            self._answers.move_to_end(slot)
            return kept[1]
        pending = self._pending.get(slot)
        if pending is not None:
            return await asyncio.shield(pending)
        credit = self.credit()
        if credit < 0 or (kept is not None and (
                self._computing or self._more_overdue_than(slot, kept[0], now))):
            self._waiting.add(slot)
            if kept is not None:
                if self.stale_counter is not None:
                    self.stale_counter.labels(endpoint=endpoint).inc()
                self._answers.move_to_end(slot)
                return kept[1]
            raise Busy(-credit / self.share)
        if now - self._window_start >= self.interval:
            self._window_start, self._computed_in_window = now, 0
        if self._computed_in_window >= self.budget:
            self._waiting.add(slot)
            raise Busy(self._window_start + self.interval - now)
        self._computed_in_window += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[slot] = future
        try:
            async with self._one_at_a_time:
                self._computing = True
                started = self.timer()
                if prepare is not None:
                    prepare()
                try:
                    answer = await self.runner(compute)
                finally:
                    self._credit -= self.timer() - started
                    self._computing = False
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: the requests sharing it get it re-raised
            raise
        finally:
            del self._pending[slot]
        future.set_result(answer)
        self._waiting.discard(slot)
        if self.counter is not None:
            self.counter.labels(endpoint=endpoint).inc()
        self._answers[slot] = (self.clock(), answer)
        self._answers.move_to_end(slot)
        while len(self._answers) > MAX_KEPT:
            self._answers.popitem(last=False)
        return answer

    def _more_overdue_than(self, slot: tuple[str, Hashable], computed_at: float,
                           now: float) -> bool:
        """True if another answer that was asked for lately and not computed (it was served
        stale or refused) is more overdue than ``slot``'s (computed at ``computed_at``): it has
        none yet, or an older one; it gets the credit first. An answer asked and served fresh
        does not count: with the credit to spare, each is computed when asked."""
        for other in list(self._waiting):
            asked_at = self._asked.get(other)
            if asked_at is None or now - asked_at > ASKED_SECONDS:
                self._waiting.discard(other)
                continue
            if other == slot:
                continue
            kept = self._answers.get(other)
            if kept is None or kept[0] < computed_at:
                return True
        return False
