"""HTTP endpoints on Faust's web server: ``/metrics``, ``/ready``, ``/api/kpis``, ``/api/events``.

Why on Faust's server rather than a separate one: it starts with the worker, before table
recovery, so readiness can be reported as 503 while state is being rebuilt, and the report is
computed in the event loop that owns the cores — between two agent batches, never half-way
through one.

``/api/kpis`` covers this worker's active partitions. With one worker (or one per partition
set being asked in turn) that is everything; the entity sharding makes per-partition results
exact, but a multi-worker deployment needs a merge in front, which is out of scope here.
Its ``duplicate`` and ``invalid`` counts come from the durable ledger, so they survive restarts.

``/api/kpis``, ``/api/live`` and ``/metrics`` are computed at most once per interval and shared
between the requests of that interval, with a limit on distinct computations and on the share
of the event loop they take (:mod:`streams.answers`): an answer may be up to a second old (older
while the state is so large that answering must yield to the apply agent), and the apply agent
never waits behind a crowd of readers.

``/api/events`` is the report's ``events`` block alone: cheap enough to poll many times a
second, e.g. to measure how soon an event produced to Kafka is counted.

Who may call what, and which scopes each audience gets, is decided by :mod:`streams.access`
(the middleware in front of every route) and :mod:`engine.security.audience` (the report cut
to the caller's audience before it is serialised).
"""

from __future__ import annotations

import math

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from engine.calendar import Calendar
from engine.config import Config
from engine.report import build_report
from engine.security.audience import filter_report
from engine.security.membership import rep_teams
from engine.timestamps import now_micros, parse_as_of
from engine.view import event_counts, warm_sums
from streams.access import grant_of
from streams.answers import Busy, SharedAnswers
from streams.metrics import WorkerMetrics
from streams.replicas import Replicas, cores_and_counts
from streams.tables import PartitionCores
from streams.wallboard import register_wallboard

JSON = "application/json"


def register_views(app: faust.App, config: Config, cores: PartitionCores,
                   metrics: WorkerMetrics, replicas: Replicas | None = None) -> None:
    """Attach the views to ``app``'s web server; ``replicas`` lets them answer for the standby
    partitions too (:mod:`streams.replicas`)."""
    calendar = Calendar(config.calendar)
    answers = SharedAnswers(counter=metrics.answers_computed,
                            stale_counter=metrics.answers_stale, mode=config.worker.answers)

    @app.page("/metrics", name="kpi-metrics")
    async def prometheus_metrics(view: faust.web.View,
                                 request: faust.web.Request) -> faust.web.Response:
        """Prometheus text exposition of this worker's registry (shared: streams.answers)."""
        try:
            body = await answers.get("metrics", cores.epoch, metrics.exposition,
                                     prepare=lambda: warm_sums(cores.active_cores(),
                                                               now_micros()))
        except Busy as exc:
            return _busy(view, exc)
        return view.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

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
                as_of = parse_as_of(text)
            except ValueError as exc:
                return view.bytes(orjson.dumps({"error": str(exc)}), content_type=JSON,
                                  status=400)
        served, missing = coverage(cores, replicas)
        partial = request.query.get("partial", "") in ("1", "true")
        if not served or (missing and not partial):
            return _missing(view, cores, served, missing)
        key = (cores.epoch, tuple(p for p, _ in served),
               None if text is None or not text.strip() else as_of)
        inputs = _report_inputs(served, as_of, config)
        try:
            # The whole report is shared; each caller gets it cut to its audience.
            body = await answers.get("kpis", key, lambda: orjson.dumps(build_report(*inputs)),
                                     prepare=lambda: warm_sums(inputs[0], as_of))
        except Busy as exc:
            return _busy(view, exc)
        grant = grant_of(request)
        if not grant.everything:
            body = orjson.dumps(filter_report(
                orjson.loads(body), grant, rep_teams(inputs[0], calendar, as_of),
                config.auth.rep_leaderboard))
        return view.bytes(body, content_type=JSON, headers=_partition_headers(served, missing))

    @app.page("/api/events", name="kpi-events")
    async def events(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """The report's ``events`` block at ``as_of`` (default now), without the windows."""
        text = request.query.get("as_of")
        try:
            as_of = now_micros() if text is None or not text.strip() else parse_as_of(text)
        except ValueError as exc:
            return view.bytes(orjson.dumps({"error": str(exc)}), content_type=JSON, status=400)
        served, missing = coverage(cores, replicas)
        if not served:
            return _missing(view, cores, served, missing)
        shard_cores, counts = cores_and_counts(served)
        counted, not_visible = event_counts(shard_cores, calendar, as_of)
        body = {"as_of": as_of, "partitions": [p for p, _ in served], "missing": missing,
                "events": {"read": counted + not_visible + counts["duplicate"]
                           + counts["invalid"], "counted": counted,
                           "duplicate": counts["duplicate"], "invalid": counts["invalid"],
                           "not_visible": not_visible}}
        return view.bytes(orjson.dumps(body), content_type=JSON)

    register_wallboard(app, config, cores, metrics,
                       answer=lambda: coverage(cores, replicas), answers=answers)


def _busy(view: faust.web.View, exc: Busy) -> faust.web.Response:
    return view.bytes(orjson.dumps({"error": str(exc)}), content_type=JSON, status=503,
                      headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))})


def coverage(cores: PartitionCores, replicas: Replicas | None) -> tuple[list, list[int]]:
    """``([(partition, shard)] served, missing partitions)`` of this worker's answers."""
    if replicas is not None:
        return replicas.coverage()
    served = [(p, cores.get(p)) for p in cores.partitions()] if cores.ready else []
    held = {p for p, _ in served}
    return served, [p for p in range(cores.config.topics.partitions) if p not in held]


def _report_inputs(served: list, as_of: int, config: Config) -> tuple:
    shard_cores, counts = cores_and_counts(served)
    return shard_cores, as_of, config, counts


def _partition_headers(served: list, missing: list[int]) -> dict[str, str]:
    headers = {"KPI-Partitions": ",".join(str(p) for p, _ in served)}
    if missing:
        headers["KPI-Partitions-Missing"] = ",".join(map(str, missing))
    return headers


def _missing(view: faust.web.View, cores: PartitionCores, served: list,
             missing: list[int]) -> faust.web.Response:
    """503 naming the partitions no answer from here can cover yet (``?partial=1`` answers
    for the others anyway, with a ``KPI-Partitions-Missing`` header)."""
    if not cores.ready and not served:
        error = "not ready: KPI state is being rebuilt"
    else:
        error = (f"partitions {', '.join(map(str, missing))} are neither owned here nor "
                 "replicated up to the end of their changelog yet (a worker is starting or "
                 "rebalancing, or a replica is catching up; [worker] standby_replicas below "
                 "workers − 1 leaves some unreplicated): ask again, or add ?partial=1")
    return view.bytes(orjson.dumps({"error": error, "missing": missing,
                                    "partitions": [p for p, _ in served]}),
                      content_type=JSON, status=503, headers={"Retry-After": "1"})
