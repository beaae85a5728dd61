"""Wiring of the live worker: app, topics, ledger table, ingest service, apply agent and views.

The path of a message: input topic → :class:`streams.ingest.Ingest` (own consumer group
``<app_id>-ingest``, in a child process: :mod:`streams.ingest_process`) →
``<app_id>-bundles`` → the ``apply`` agent (Faust group ``<app_id>``) → the partition's
:class:`streams.ledger.Shard` and a record in the ``ledger`` table
(``<app_id>-ledger-changelog``); a timer runs the retention pass (:mod:`streams.retention`)
over the shards and their ledger records, and a watch puts the dead-letter topic back if it is
deleted (:mod:`streams.dead_letter_topic`). The ingest service and the ledger writer are
dependencies of the Faust app, so they start and stop with it.

Also the one rule about local table files (RocksDB under ``[worker] data_dir``): a clean stop
leaves a marker file, and the next start reuses the local files (fast restart). After a run that
did not stop cleanly the files are reused only when they are provably not ahead of Kafka
(:mod:`streams.local_state`: they open, and per changelog partition the record at their
persisted offset is theirs); otherwise they are discarded, with the reason logged, and the
state is recovered from the changelog, which is the source of truth.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faust

from engine.calendar import Calendar
from engine.collector import KpiCollector
from engine.config import Config
from streams.agents import register_agents
from streams.app import create_app
from streams.apply import Apply, LedgerWriter
from streams.dead_letter_topic import DeadLetterTopicWatch
from streams.heap import HeapKeeper
from streams.ingest import Ingest
from streams.ingest_process import IngestProcess
from streams.kafka import FatalHandler, exit_on_kafka_failure
from streams.metrics import WorkerMetrics
from streams.paused_fetch import fetch_only_active_partitions
from streams.replicas import REFRESH_SECONDS as REPLICA_REFRESH_SECONDS
from streams.replicas import Replicas
from streams.retention import RETENTION_INTERVAL_SECONDS, Retention
from streams.resume import BundlePositions
from streams.standby_flow import keep_standby_records_on_resume
from streams.tables import LedgerTable, PartitionCores
from streams.topics import (
    LEDGER_TABLE,
    Topics,
    bundles_topic_name,
    changelog_topic_config,
    declare_topics,
)
from streams.views import register_views

log = logging.getLogger(__name__)

CLEAN_STOP_MARKER = "clean-stop"


@dataclass(slots=True)
class Worker:
    """Everything one worker is made of; ``app`` is what Faust runs."""

    config: Config
    app: faust.App
    topics: Topics
    table: LedgerTable
    cores: PartitionCores
    metrics: WorkerMetrics
    ingest: Ingest | IngestProcess
    writer: LedgerWriter
    apply: Apply
    retention: Retention

    @property
    def state_dir(self) -> Path:
        return Path(self.app.conf.tabledir)

    def prepare_local_state(self, problem: Callable[[Path], str | None] | None = None) -> bool:
        """Discard local table files unless the last run stopped cleanly or ``problem`` (given
        the tables directory: why the files may be ahead of Kafka, ``None`` if they are not,
        :func:`streams.local_state.local_state_problem`) clears them; True if discarded."""
        tables = self.state_dir
        marker = tables.parent / CLEAN_STOP_MARKER
        clean = marker.exists()
        marker.unlink(missing_ok=True)
        if clean or not tables.exists():
            return False
        reason = "not checked" if problem is None else problem(tables)
        if reason is None:
            log.warning("the previous run did not stop cleanly, but its local table files are "
                        "not ahead of Kafka (each changelog partition holds the record at "
                        "their offset): reusing the local table state in %s", tables)
            return False
        log.warning("the previous run did not stop cleanly: discarding %s and recovering "
                    "table state from the changelog, because %s", tables, reason)
        shutil.rmtree(tables)
        return True

    def mark_clean_stop(self) -> bool:
        """Leave the marker if every table write was acknowledged by Kafka; True if left."""
        if self.table.unconfirmed_batches:
            log.warning("stopped with unacknowledged table writes; next start recovers "
                        "from the changelog")
            return False
        marker = self.state_dir.parent / CLEAN_STOP_MARKER
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return True


def build_worker(config: Config, *, on_fatal: FatalHandler = exit_on_kafka_failure,
                 ingest_in_process: bool = False, log_level: str = "WARNING") -> Worker:
    """A complete, unstarted worker; its ingest stage runs in a child process unless
    ``ingest_in_process`` (see :mod:`streams.ingest_process`)."""
    app = create_app(config)
    topics = declare_topics(app, config)
    metrics = WorkerMetrics()
    cores = PartitionCores(config)
    positions = BundlePositions(bundles_topic_name(config))
    positions.install(app.consumer)
    keep_standby_records_on_resume(app)
    fetch_only_active_partitions(app.consumer)
    table = LedgerTable(
        app,
        cores=cores,
        heap=HeapKeeper(),
        positions=positions,
        name=LEDGER_TABLE,
        key_type=bytes,
        value_type=bytes,  # bytes keys and values mean the raw codec (no JSON layer)
        partitions=config.topics.partitions,
        extra_topic_configs=changelog_topic_config(config),
        beacon=app.tables.beacon,
        help="<partition>|<last bundle offset>|e<writer epoch> -> the ledger entries of that "
             "apply round (streams.ledger); <partition>|<from>|f<epoch>: a new owner's fence "
             "(streams.fencing).",
    )
    app.tables.add(table)
    metrics.bind_state(lambda: cores.ready, lambda: len(cores))
    kpis = KpiCollector(cores.active_cores, Calendar(config.calendar), config)
    # Exported only while ready: partial cores during recovery would show a false drop.
    metrics.add_text(lambda: kpis.exposition() if cores.ready else b"")
    ingest: Ingest | IngestProcess
    if ingest_in_process:
        ingest = Ingest(config, metrics, on_fatal=on_fatal, on_crash=app.crash,
                        beacon=app.beacon)
    else:
        ingest = IngestProcess(app, config, metrics, log_level=log_level, beacon=app.beacon)
    writer = LedgerWriter(config, table, beacon=app.beacon)
    table.writer = writer  # writes the fence of each partition taken over (streams.fencing)
    table.fenced.count = metrics.ledger_fenced.inc
    # Dependencies added before the app starts are started first and stopped last, in the
    # order added: the dead-letter watch takes its first look before the ingest stage can
    # send a dead letter (streams.dead_letter_topic).
    app.add_dependency(writer)
    app.add_dependency(DeadLetterTopicWatch(config, beacon=app.beacon))
    app.add_dependency(ingest)
    apply = Apply(app, table, writer, metrics, on_fatal=on_fatal,
                  bundles_topic=bundles_topic_name(config))
    metrics.bind_apply_lag(apply.lag)
    register_agents(app, topics, apply)
    retention = Retention(config.limits.retention_days, cores, table, writer)

    @app.timer(RETENTION_INTERVAL_SECONDS, on_leader=False, name="retention")
    async def retention_pass() -> None:
        await retention.run()

    replicas = Replicas(table, cores, config.topics.partitions)

    @app.timer(REPLICA_REFRESH_SECONDS, on_leader=False, name="replicas")
    async def refresh_replicas() -> None:
        await replicas.refresh()

    @app.timer(REPLICA_REFRESH_SECONDS, on_leader=False, name="replica-ends")
    async def read_replica_ends() -> None:
        await replicas.update_ends()

    register_views(app, config, cores, metrics, replicas)
    return Worker(config, app, topics, table, cores, metrics, ingest, writer, apply, retention)
