"""The gateway's HTTP service: one route per configured source, answers after Kafka acked.

Per delivery: size limit (413), authentication (401, no detail), reading (400), mapping, the
decoder's check of every produced event, then one awaited batch to Kafka — events to the input
topic keyed by entity (as ``kpi-engine produce`` keys them), dead letters to the dead-letter
topic, object state to the state topic — and only then the source's 2xx answer. Kafka not
acknowledging in time: 503 with ``Retry-After``. ``GET /ready`` says whether the producer is up;
``GET /metrics`` counts deliveries, events and dead letters per source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.config import Config
from engine.event import Rejection
from engine.producer import entity_key
from gateway.delivery import INVALID_EVENT, Emit, Unauthorized, Unreadable
from gateway.object_state import ObjectStateStore
from gateway.publisher import KafkaUnavailable, Publisher, Record, dead_letter
from engine.people.metrics import RosterCollector
from gateway.roster import attribution
from gateway.sources import build_source
from gateway.sources.base import ItemResult, MappingContext, Source
from gateway.validation import EventGate

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30


class Gateway:
    """The sources, the gate, the publisher and the state store of one gateway process."""

    def __init__(self, config: Config, *, clock: Any = None) -> None:
        self.config = config
        self.gate = EventGate(config)
        self.publisher = Publisher(config)
        needs_state = any(s.kind in ("hubspot", "salesforce") for s in config.gateway.sources)
        self.states = ObjectStateStore(config) if needs_state else None
        people = attribution(config)
        context = MappingContext(people, config.calendar.zone, config.money.currency,
                                 self.states, clock)
        self.sources: list[Source] = [build_source(s, context) for s in config.gateway.sources]
        self.locks = KeyLocks()
        self.registry = CollectorRegistry()
        self.deliveries = Counter("kpi_gateway_deliveries", "Deliveries by source and HTTP status",
                                  ["source", "status"], registry=self.registry)
        self.events = Counter("kpi_gateway_events", "Contract events produced",
                              ["source"], registry=self.registry)
        self.dead_letters = Counter("kpi_gateway_dead_letters", "Items dead-lettered",
                                    ["source", "reason"], registry=self.registry)
        self.registry.register(RosterCollector(people.roster))
        if self.states is not None:
            self.registry.register(_WaitingCollector(self.states))
        self.ready = False

    async def start(self) -> None:
        await self.publisher.start()
        if self.states is not None:
            loaded = await self.states.load()
            log.info("loaded %d object states from %s", loaded, self.states.topic)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self.states is not None:
            await self.states.stop()
        await self.publisher.stop()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.gateway.max_body_bytes)
        for source in self.sources:
            app.router.add_post(source.config.path, self._handler(source))
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _ready(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _handler(self, source: Source):
        async def handle(request: web.Request) -> web.Response:
            response = await self._handle(source, request)
            self.deliveries.labels(source.name, str(response.status)).inc()
            return response
        return handle

    async def _handle(self, source: Source, request: web.Request) -> web.Response:
        limit = self.config.gateway.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(413, f"the body exceeds {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body exceeds {limit} bytes")
        if len(body) > limit:
            return _error(413, f"the body exceeds {limit} bytes")
        if not source.authenticate(request.method, request.headers, body):
            return web.Response(status=401)
        keys = source.state_keys(body)
        if not keys:
            return await self._deliver(source, body)
        async with self.locks.holding(keys):
            return await self._deliver(source, body)

    async def _deliver(self, source: Source, body: bytes) -> web.Response:
        try:
            delivery = await source.map(body)
        except Unauthorized:
            return web.Response(status=401)
        except Unreadable as exc:
            return _error(400, str(exc))
        records, results = self.records_for(source, delivery)
        try:
            await self.publisher.publish(records)
        except KafkaUnavailable:
            return web.Response(status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                                text="Kafka is unavailable; retry later\n")
        if delivery.commit is not None:
            delivery.commit()
        for result in results:
            if result.status == "accepted":
                self.events.labels(source.name).inc()
            else:
                self.dead_letters.labels(source.name, result.reason or "").inc()
        status, content_type, payload = source.answer(delivery, results)
        return web.Response(status=status, body=payload, content_type=content_type.split(";")[0],
                            charset="utf-8" if "charset" in content_type else None)

    def records_for(self, source: Source, delivery: Any) -> tuple[list[Record], list[ItemResult]]:
        """The Kafka records of a mapped delivery, and what became of each item."""
        topics = self.config.topics
        records: list[Record] = []
        results: list[ItemResult] = []
        for item in delivery.items:
            if isinstance(item, Emit):
                if isinstance(item.event, bytes):  # a contract source: the line as it came
                    rejection = self.gate.check_bytes(item.event)
                    checked: bytes | Rejection = item.event if rejection is None else rejection
                    reason = rejection.reason if rejection is not None else ""
                else:
                    checked = self.gate(item.event)
                    reason = INVALID_EVENT
                if isinstance(checked, Rejection):
                    detail = (checked.detail if isinstance(item.event, bytes)
                              else f"{checked.reason}: {checked.detail}")
                    records.append(dead_letter(topics.dead_letter, source.name, reason, detail,
                                               item.origin))
                    results.append(ItemResult("dead_lettered", reason=reason, detail=detail))
                    continue
                records.append(Record(topics.input, entity_key(checked), checked))
                results.append(ItemResult("accepted", event_id=orjson.loads(checked)["event_id"]))
            else:
                records.append(dead_letter(topics.dead_letter, source.name, item.reason,
                                           item.detail, item.origin))
                results.append(ItemResult("dead_lettered", reason=item.reason, detail=item.detail))
        for key, value in delivery.state:
            records.append(Record(self.config.gateway.state_topic, key, value))
        return records, results


class _WaitingCollector:
    """``kpi_gateway_waiting_objects{source}``: HubSpot objects whose events wait for an owner.

    Such a deal is in no KPI yet; a number that keeps growing means the CRM does not send
    ``hubspot_owner_id`` changes (subscribe to them) or deals are left without an owner.
    """

    def __init__(self, states: ObjectStateStore) -> None:
        self.states = states

    def collect(self):  # noqa: ANN201 (prometheus_client's protocol)
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("kpi_gateway_waiting_objects",
                                   "CRM objects whose events wait for an owner", labels=("source",))
        for source, count in sorted(self.states.waiting().items()):
            family.add_metric((source,), count)
        yield family


class KeyLocks:
    """One lock per object-state key, taken in sorted order (no deadlock), dropped when free."""

    def __init__(self) -> None:
        self.locks: dict[str, asyncio.Lock] = {}
        self.users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def holding(self, keys: list[str]) -> AsyncIterator[None]:
        registered: list[str] = []
        acquired: list[str] = []
        try:
            for key in sorted(set(keys)):
                lock = self.locks.setdefault(key, asyncio.Lock())
                self.users[key] = self.users.get(key, 0) + 1
                registered.append(key)
                await lock.acquire()
                acquired.append(key)
            yield
        finally:
            for key in acquired:
                self.locks[key].release()
            for key in registered:
                self.users[key] -= 1
                if not self.users[key]:
                    del self.users[key], self.locks[key]


def _error(status: int, detail: str) -> web.Response:
    return web.json_response({"error": detail}, status=status)


async def serve(config: Config, *, host: str | None = None, port: int | None = None,
                ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set (or the task is cancelled)."""
    gateway = Gateway(config)
    try:
        await gateway.start()
    except BaseException:
        await gateway.stop()
        raise
    runner = web.AppRunner(gateway.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or config.gateway.host,
                       config.gateway.port if port is None else port)
    await site.start()
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
        await gateway.stop()
