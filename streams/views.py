"""HTTP endpoints on Faust's web server: ``/metrics``, ``/ready``, ``/api/kpis``, ``/api/events``.

Why on Faust's server rather than a separate one: it starts with the worker, before table
recovery, so readiness can be reported as 503 while state is being rebuilt, and the report is
computed in the event loop that owns the cores — between two agent batches, never half-way
through one.

``/api/kpis`` covers this worker's active partitions. With one worker (or one per partition
set being asked in turn) that is everything; the entity sharding makes per-partition results
exact, but a multi-worker deployment needs a merge in front, which is out of scope here.
Its ``duplicate`` and ``invalid`` counts come from the durable ledger, so they survive restarts.

``/api/events`` is the report's ``events`` block alone: cheap enough to poll many times a
second, e.g. to measure how soon an event produced to Kafka is counted.
"""

from __future__ import annotations

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from engine.calendar import Calendar
from engine.config import Config
from engine.report import build_report
from engine.timestamps import now_micros, parse_instant
from engine.view import event_counts
from streams.metrics import WorkerMetrics
from streams.tables import PartitionCores
from streams.wallboard import register_wallboard

JSON = "application/json"


def register_views(app: faust.App, config: Config, cores: PartitionCores,
                   metrics: WorkerMetrics) -> None:
    """Attach the views to ``app``'s web server."""
    calendar = Calendar(config.calendar)

    @app.page("/metrics", name="kpi-metrics")
    async def prometheus_metrics(view: faust.web.View,
                                 request: faust.web.Request) -> faust.web.Response:
        """Prometheus text exposition of this worker's registry."""
        return view.bytes(metrics.exposition(),
                          headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/ready", name="kpi-ready")
    async def ready(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """200 once table recovery is done and every active partition's core is rebuilt."""
        body = {"ready": cores.ready, "partitions": cores.partitions()}
        return view.bytes(orjson.dumps(body), content_type=JSON,
                          status=200 if cores.ready else 503)

    @app.page("/api/kpis", name="kpi-report")
    async def kpis(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """The SPEC §5 report at ``as_of`` (RFC 3339 with a zone; default now)."""
        text = request.query.get("as_of")
        if text is None or not text.strip():
            as_of = now_micros()
        else:
            try:
                as_of = parse_instant(text)
            except ValueError as exc:
                return view.bytes(orjson.dumps({"error": str(exc)}), content_type=JSON,
                                  status=400)
        if not cores.ready:
            return view.bytes(orjson.dumps({"error": "not ready: KPI state is being rebuilt"}),
                              content_type=JSON, status=503)
        report = build_report(cores.active_cores(), as_of, config, cores.counts())
        return view.bytes(orjson.dumps(report), content_type=JSON)

    @app.page("/api/events", name="kpi-events")
    async def events(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """The report's ``events`` block at ``as_of`` (default now), without the windows."""
        text = request.query.get("as_of")
        try:
            as_of = now_micros() if text is None or not text.strip() else parse_instant(text)
        except ValueError as exc:
            return view.bytes(orjson.dumps({"error": str(exc)}), content_type=JSON, status=400)
        if not cores.ready:
            return view.bytes(orjson.dumps({"error": "not ready: KPI state is being rebuilt"}),
                              content_type=JSON, status=503)
        counted, not_visible = event_counts(cores.active_cores(), calendar, as_of)
        counts = cores.counts()
        body = {"as_of": as_of, "partitions": cores.partitions(),
                "events": {"read": counted + not_visible + counts["duplicate"]
                           + counts["invalid"], "counted": counted,
                           "duplicate": counts["duplicate"], "invalid": counts["invalid"],
                           "not_visible": not_visible}}
        return view.bytes(orjson.dumps(body), content_type=JSON)

    register_wallboard(app, config, cores, metrics)
