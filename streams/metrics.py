"""The worker's own Prometheus metrics: what happened to every consumed message.

(The KPI gauges themselves come from :class:`engine.collector.KpiCollector`, whose text
:mod:`streams.worker` adds to :meth:`WorkerMetrics.exposition` while the worker is ready.)

Why a dedicated :class:`~prometheus_client.CollectorRegistry`: several apps can live in one
process (tests), and ``GET /metrics`` must show exactly this worker's series, not whatever a
library registered globally.

The accounting identity (SPEC §1.3, every consumed message ends in exactly one outcome)::

    kpi_messages_consumed_total
        == sum(kpi_events_invalid_total)                        # dead-lettered, at ingest
         + sum(kpi_events_total{outcome="counted"})             # at apply, primary aspect
         + sum(kpi_events_total{outcome="duplicate"})           # at apply, primary aspect

holds for one worker once its bundles are applied (and over a whole group of workers in any
case, since ingest and apply of one event may run on different workers). These are rates for
Prometheus: they live for the process and restart at zero. After a crash or a rebalance, work
that was not committed is redone; the redone items are recognised by their source offsets and
skipped (``kpi_replays_skipped_total``), so they count nowhere. The report's ``duplicate`` and
``invalid`` counts do not come from here but from the durable ledger
(:meth:`streams.tables.PartitionCores.counts`), so they survive restarts.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.event import EVENT_TYPES, REASON_CODES

OUTCOMES = ("counted", "duplicate")


class WorkerMetrics:
    """The counters and gauges of one worker, with plain-integer totals (process-local)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter("kpi_messages_consumed_total",
                                "Messages consumed from the input topic.", registry=r)
        self.invalid = Counter("kpi_events_invalid_total",
                               "Input messages rejected and dead-lettered, by reason code.",
                               ["reason"], registry=r)
        self.events = Counter("kpi_events_total",
                              "Valid events applied to KPI state (counted), or new messages "
                              "repeating an event_id already applied (duplicate).",
                              ["type", "outcome"], registry=r)
        self.dead_letter_sent = Counter("kpi_dead_letter_sent_total",
                                        "Messages written to the dead-letter topic and "
                                        "acknowledged by Kafka.", registry=r)
        self.apply_errors = Counter("kpi_apply_errors_total",
                                    "Bundle items the apply stage could not decode or apply "
                                    "(a bug or a foreign writer; see the log).",
                                    registry=r)
        self.replays = Counter("kpi_replays_skipped_total",
                               "Bundle items skipped because the same input message was "
                               "already taken: work redone after a crash or rebalance.",
                               registry=r)
        self.ledger_fenced = Counter(
            "kpi_ledger_fenced_records_total",
            "Ledger records ignored because an older owner of the partition wrote them after "
            "a newer one had fenced it (a zombie owner; streams.fencing), each counted once "
            "per worker process.", registry=r)
        self.answers_computed = Counter(
            "kpi_answers_computed_total",
            "Answers of /api/kpis, /api/events, /api/live and /metrics computed (each is "
            "shared by the requests of one interval: streams.answers).", ["endpoint"],
            registry=r)
        self.answers_stale = Counter(
            "kpi_answers_stale_total",
            "Answers served older than the sharing interval because computing answers had used "
            "up its share of the event loop (streams.answers.LOOP_SHARE): the state is large "
            "and answers are asked often.", ["endpoint"], registry=r)
        for reason in REASON_CODES:
            self.invalid.labels(reason)
        for event_type in EVENT_TYPES:
            for outcome in OUTCOMES:
                self.events.labels(event_type, outcome)
        self.totals: Tally[str] = Tally()
        self.lag: dict[tuple[str, int], int] = {}
        self.registry.register(_LagCollector(self))
        self._texts: list[Callable[[], bytes]] = []

    def add_text(self, text: Callable[[], bytes]) -> None:
        """A source of exposition text written without the registry (the KPI gauges: tens of
        thousands of samples, :meth:`engine.collector.KpiCollector.exposition`)."""
        self._texts.append(text)

    def exposition(self) -> bytes:
        """What ``GET /metrics`` answers: the registry's metrics, then the added texts."""
        return generate_latest(self.registry) + b"".join(text() for text in self._texts)

    def bind_state(self, ready: Callable[[], bool], partitions: Callable[[], int]) -> None:
        """Gauges read from live state at scrape time (never copied, so never stale)."""
        Gauge("kpi_worker_ready", "1 when table recovery is done and the KPI state of every "
              "active partition is rebuilt, else 0.",
              registry=self.registry).set_function(lambda: 1.0 if ready() else 0.0)
        Gauge("kpi_worker_partitions", "Partitions whose KPI state this worker holds.",
              registry=self.registry).set_function(lambda: float(partitions()))

    def bind_apply_lag(self, lag: Callable[[], dict[int, int]]) -> None:
        """``kpi_apply_lag_bundles{partition}``: bundles not yet applied, read at scrape time."""
        self.registry.register(_ApplyLagCollector(lag))

    def count_ingest(self, consumed: int, invalid_by_reason: Tally[str]) -> None:
        self.consumed.inc(consumed)
        self.totals["read"] += consumed
        for reason, n in invalid_by_reason.items():
            self.invalid.labels(reason).inc(n)
            self.totals["invalid"] += n

    def set_lag(self, lag: dict[tuple[str, int], int]) -> None:
        """The ingest stage's latest lag per assigned input partition (replaces the last)."""
        self.lag = dict(lag)

    def count_dead_letters(self, n: int) -> None:
        self.dead_letter_sent.inc(n)

    def count_applied(self, counted_by_type: Tally[str], duplicate_by_type: Tally[str]) -> None:
        for event_type, n in counted_by_type.items():
            self.events.labels(event_type, "counted").inc(n)
            self.totals["counted"] += n
        for event_type, n in duplicate_by_type.items():
            self.events.labels(event_type, "duplicate").inc(n)
            self.totals["duplicate"] += n

    def count_replays(self, n: int) -> None:
        if n:
            self.replays.inc(n)


class _LagCollector(Collector):
    """``kpi_consumer_lag_messages{topic, partition}`` from the ingest stage's last reading.

    Only partitions the ingest consumer holds now are reported: a revoked partition's series
    disappears here and appears on the worker that took it over.
    """

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kpi_consumer_lag_messages",
            "Messages between the ingest consumer's position and the end of each assigned "
            "input partition.", labels=["topic", "partition"])
        for (topic, partition), lag in sorted(self.metrics.lag.items()):
            family.add_metric([topic, str(partition)], lag)
        yield family


class _ApplyLagCollector(Collector):
    """``kpi_apply_lag_bundles{partition}``: bundles between the last one the apply stage has
    applied and the end of each bundles partition it holds. With the ingest stage's
    ``kpi_consumer_lag_messages`` it tells where a backlog sits: input not yet judged, or
    judged and not yet in the KPI state."""

    def __init__(self, lag: Callable[[], dict[int, int]]) -> None:
        self.lag = lag

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kpi_apply_lag_bundles",
            "Bundles not yet applied to KPI state, per bundles partition held.",
            labels=["partition"])
        for partition, lag in sorted(self.lag().items()):
            family.add_metric([str(partition)], lag)
        yield family
