"""Wiring of the live worker: app, topics, table, agents and views from one ``Config``.

Also the one rule about local table files (RocksDB under ``[worker] data_dir``): Faust writes a
table record to the local store when it *sends* the changelog record, before Kafka has
acknowledged it. After a hard stop (``kill -9``, OOM, a crash) the local files can therefore
hold records that Kafka never got; trusting them would make the redelivered input look like
duplicates and the missing records would never reach the changelog. So a worker that did not
stop cleanly discards its local table files on the next start and recovers from the changelog,
which is the source of truth. A clean stop leaves a marker file, and the next start reuses the
local files (fast restart).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import faust

from engine.calendar import Calendar
from engine.collector import KpiCollector
from engine.config import Config
from streams.agents import (
    APPLY_BATCH,
    Apply,
    FatalHandler,
    Ingest,
    exit_on_kafka_failure,
    register_agents,
)
from streams.app import create_app
from streams.metrics import WhenReady, WorkerMetrics
from streams.tables import TABLE_NAME, EntityTable, PartitionCores
from streams.topics import Topics, declare_topics
from streams.views import register_views

log = logging.getLogger(__name__)

CLEAN_STOP_MARKER = "clean-stop"


@dataclass(slots=True)
class Worker:
    """Everything one worker is made of; ``app`` is what Faust runs."""

    config: Config
    app: faust.App
    topics: Topics
    table: EntityTable
    cores: PartitionCores
    metrics: WorkerMetrics
    ingest: Ingest
    apply: Apply

    @property
    def state_dir(self) -> Path:
        return Path(self.app.conf.tabledir)

    def prepare_local_state(self) -> bool:
        """Discard local table files unless the last run stopped cleanly; True if discarded."""
        tables = self.state_dir
        marker = tables.parent / CLEAN_STOP_MARKER
        clean = marker.exists()
        marker.unlink(missing_ok=True)
        if clean or not tables.exists():
            return False
        log.warning("the previous run did not stop cleanly: discarding %s and recovering "
                    "table state from the changelog", tables)
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


def build_worker(config: Config, *, on_fatal: FatalHandler = exit_on_kafka_failure) -> Worker:
    """A complete, unstarted worker."""
    app = create_app(config)
    topics = declare_topics(app, config)
    metrics = WorkerMetrics()
    cores = PartitionCores(config)
    table = EntityTable(
        app,
        cores=cores,
        name=TABLE_NAME,
        key_type=bytes,
        value_type=bytes,  # bytes keys and values mean the raw codec (no JSON layer)
        partitions=config.topics.partitions,
        beacon=app.tables.beacon,
        help="Route key -> [aspect, event row] pairs applied under it (streams.tables).",
    )
    app.tables.add(table)
    metrics.bind_state(lambda: cores.ready, lambda: len(cores))
    kpis = KpiCollector(cores.active_cores, Calendar(config.calendar), config)
    metrics.registry.register(WhenReady(kpis, lambda: cores.ready))
    ingest = Ingest(app, config, topics, metrics, on_fatal=on_fatal)
    apply = Apply(app, table, metrics, on_fatal=on_fatal)
    # Faust throttles consumption whenever more than 100 table writes wait in its producer
    # buffer; a batch legitimately writes up to one record per event, and the apply agent
    # waits for their acknowledgement itself, so let a whole batch through.
    app.producer.buffer.max_messages = 4 * APPLY_BATCH
    register_agents(app, topics, ingest, apply)
    register_views(app, config, cores, metrics)
    return Worker(config, app, topics, table, cores, metrics, ingest, apply)
