"""The live worker end to end, against a real Kafka broker and a real ``kpi-engine worker``.

What is checked is the contract's accounting (SPEC §1.3): every consumed message ends in
exactly one of counted, duplicate or dead-lettered; the dead-letter topic holds exactly the
invalid messages, byte for byte, with reason headers; and de-duplication, and the report's
``events`` counts, survive a clean restart and a ``kill -9``. (Report against file, number by
number: ``test_worker_equivalence.py``.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from web_access import WebAccess

from engine.config import config_from_mapping
from engine.kafka_client import client_kwargs
from engine.kafka_local import free_port

pytestmark = pytest.mark.kafka

MAX_EVENT_BYTES = 4096
PARTITIONS = 3
WAIT_SECONDS = 180.0  # the shared test machine can be slow; a healthy run needs a few seconds


# -- test data -----------------------------------------------------------------------------------

def _iso(dt: datetime) -> str:
    return dt.isoformat()


def valid_events(count: int, now: datetime, prefix: str) -> list[dict]:
    """``count`` valid events cycling through all eight types, all in the past year."""
    events = []
    for i in range(count):
        entity = i // 8
        team, rep = f"team-{i % 3}", f"rep-{i % 7}"
        base = {"event_id": f"{prefix}-{i}",
                "occurred_at": _iso(now - timedelta(hours=1 + (i * 37) % 8000))}
        kind = i % 8
        if kind == 0:
            body = {"type": "lead.created", "lead_id": f"L{entity}", "team_id": team,
                    "rep_id": rep, "source": "web"}
        elif kind == 1:
            body = {"type": "lead.qualified", "lead_id": f"L{entity}", "team_id": team,
                    "rep_id": rep}
        elif kind == 2:
            body = {"type": "activity.logged", "team_id": team, "rep_id": rep,
                    "activity_type": ("call", "email", "meeting", "demo", "other")[entity % 5]}
        elif kind == 3:
            body = {"type": "deal.created", "deal_id": f"D{entity}", "team_id": team,
                    "rep_id": rep, "amount": 1000}
        elif kind == 4:
            body = {"type": "deal.closed", "deal_id": f"D{entity}", "team_id": team,
                    "rep_id": rep, "outcome": "won", "amount": 1250.5,
                    "customer_id": f"C{entity}"}
        elif kind == 5:
            body = {"type": "subscription.started", "subscription_id": f"S{entity}",
                    "customer_id": f"C{entity}", "mrr": 99.0, "currency": "USD"}
        elif kind == 6:
            body = {"type": "subscription.cancelled", "subscription_id": f"S{entity}",
                    "customer_id": f"C{entity}"}
        else:
            body = {"type": "spend.recorded", "amount": 50,
                    "category": ("marketing", "sales")[entity % 2], "team_id": team}
        events.append({**base, **body})
    return events


def invalid_messages(now: datetime) -> list[tuple[str, bytes | None]]:
    """``(expected reason, raw value)``: every reason code, including the live-only two."""
    t = _iso(now - timedelta(days=1))

    def enc(doc: dict) -> bytes:
        return orjson.dumps(doc)

    return [
        ("malformed_json", b'{"event_id": "bad-1", "type": '),
        ("malformed_json", None),  # a tombstone: no value at all
        ("not_an_object", b'[1, 2, 3]'),
        ("unknown_type", enc({"event_id": "bad-3", "type": "lead.deleted", "occurred_at": t})),
        ("missing_field", enc({"event_id": "bad-4", "type": "lead.created", "occurred_at": t})),
        ("invalid_field", enc({"event_id": "bad-5", "type": "activity.logged", "occurred_at": t,
                               "team_id": "t", "rep_id": "r", "activity_type": "fax"})),
        ("unsupported_schema_version", enc({"event_id": "bad-6", "type": "lead.created",
                                            "occurred_at": t, "lead_id": "L",
                                            "schema_version": 2})),
        ("currency_mismatch", enc({"event_id": "bad-7", "type": "deal.created",
                                   "occurred_at": t, "deal_id": "D", "team_id": "t",
                                   "rep_id": "r", "amount": 5, "currency": "EUR"})),
        ("too_large", enc({"event_id": "bad-8", "type": "lead.created", "occurred_at": t,
                           "lead_id": "L", "padding": "x" * (MAX_EVENT_BYTES + 10)})),
        ("future_timestamp", enc({"event_id": "bad-9", "type": "lead.created",
                                  "occurred_at": _iso(now + timedelta(days=1)),
                                  "lead_id": "L"})),
        ("too_late", enc({"event_id": "bad-10", "type": "lead.created",
                          "occurred_at": _iso(now - timedelta(days=900)), "lead_id": "L"})),
    ]


def key_of(event: dict) -> bytes:
    for name in ("lead_id", "deal_id", "subscription_id", "rep_id", "team_id"):
        if name in event:
            return event[name].encode()
    return event["event_id"].encode()


# -- Kafka helpers -------------------------------------------------------------------------------

def _client(bootstrap: str) -> dict:
    """aiokafka settings for ``bootstrap``, secured as the engine's are when ``KPI_KAFKA_*`` say
    so (the session broker with ``KPI_TEST_KAFKA_SECURITY=sasl_ssl``, tests/conftest.py)."""
    return client_kwargs(config_from_mapping({"kafka": {"bootstrap_servers": bootstrap}},
                                             os.environ).kafka)


def produce(bootstrap: str, topic: str,
            messages: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Send ``(key, value)`` messages in order; return each one's ``(partition, offset)``."""

    async def run() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(**_client(bootstrap), linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=key) for key, value in messages]
            results = await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return [(r.partition, r.offset) for r in results]

    return asyncio.run(run())


def consume_all(bootstrap: str, topic: str, expected: int, settle: float = 3.0) -> list:
    """Every record of ``topic`` from the beginning: at least ``expected``, then ``settle`` s."""

    async def run() -> list:
        consumer = AIOKafkaConsumer(topic, **_client(bootstrap),
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        records: list = []
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            quiet_until = None
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records.extend(part)
                if len(records) >= expected:
                    quiet_until = quiet_until or time.monotonic() + settle
                    if time.monotonic() >= quiet_until:
                        break
        finally:
            await consumer.stop()
        return records

    return asyncio.run(run())


# -- the worker as a subprocess ----------------------------------------------------------------

class WorkerProcess:
    """``kpi-engine worker`` in a subprocess, with its HTTP endpoints."""

    def __init__(self, config_path: Path, log_path: Path, web_port: int,
                 args: tuple[str, ...] = (), web: WebAccess | None = None) -> None:
        self.config_path = config_path
        self.log_path = log_path
        # ``web``: the tokens and TLS its configuration has (tests/web_access.py); open if None
        self.web = web or WebAccess()
        self.base = self.web.base(web_port)
        self.args = args  # e.g. --web-port and --data-dir for a second worker
        self.process: subprocess.Popen[bytes] | None = None
        # a bearer token, when the worker has [auth] tokens: the executive's of ``web``
        self.token: str | None = self.web.tokens.get("executive")

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "--config", str(self.config_path),
             "--log-level", "info", *self.args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        return self.web.fetch(self.base + path, self.token, timeout=30)

    def wait_ready(self) -> None:
        self._until(lambda: self._status("/ready") == 200, "the worker to be ready")

    def _status(self, path: str) -> int | None:
        try:
            return self.get(path)[0]
        except OSError:
            return None

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, body = self.get("/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def report(self, as_of: str | None = None) -> dict:
        path = "/api/kpis" if as_of is None else f"/api/kpis?as_of={urllib.parse.quote(as_of)}"
        status, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def events(self) -> dict:
        """The ``events`` block (``/api/events``), or {} while not ready."""
        status, body = self.get("/api/events")
        return json.loads(body)["events"] if status == 200 else {}

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        self._until(condition, what)

    def _until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}) while waiting "
                                     f"for {what}; log:\n{self.log_tail()}")
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; now {self.state()}; "
                             f"log:\n{self.log_tail()}")

    def state(self) -> str:
        """What ``/ready`` and ``/api/events`` say, for failure messages."""
        try:
            lag = [line for line in self.get("/metrics")[1].decode().splitlines()
                   if line.startswith(("kpi_consumer_lag_messages", "kpi_apply_lag_bundles",
                                       "kpi_messages_consumed_total"))]
            return (f"{self.get('/ready')[1]!r} {self.get('/api/events')[1]!r}; "
                    f"lag: {'; '.join(lag)}")
        except OSError as exc:
            return repr(exc)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and set(labels.items()) <= set(sample_labels))


def outcomes(samples: dict) -> dict[str, float]:
    return {
        "consumed": total(samples, "kpi_messages_consumed_total"),
        "counted": total(samples, "kpi_events_total", outcome="counted"),
        "duplicate": total(samples, "kpi_events_total", outcome="duplicate"),
        "invalid": total(samples, "kpi_events_invalid_total"),
        "dead_letter_sent": total(samples, "kpi_dead_letter_sent_total"),
    }


def all_accounted(worker: WorkerProcess, consumed: int) -> Callable[[], bool]:
    def check() -> bool:
        o = outcomes(worker.metrics())
        return (o["consumed"] == consumed
                and o["counted"] + o["duplicate"] + o["invalid"] == consumed
                and o["dead_letter_sent"] == o["invalid"])
    return check


@pytest.fixture
def worker_setup(kafka_broker, unique_name, tmp_path, web_access) -> Iterator[dict]:
    """A config file for a fresh app and topics; yields names, paths and a worker factory."""
    names = {"input": unique_name("in"), "dead_letter": unique_name("dlq"),
             "app_id": unique_name("app")}
    port = free_port()
    config_path = tmp_path / "worker.toml"
    config_path.write_text(f"""
[kafka]
bootstrap_servers = "{kafka_broker.bootstrap}"
[topics]
input = "{names['input']}"
dead_letter = "{names['dead_letter']}"
partitions = {PARTITIONS}
[worker]
app_id = "{names['app_id']}"
data_dir = "{tmp_path / 'data'}"
web_host = "127.0.0.1"
web_port = {port}
[limits]
max_event_bytes = {MAX_EVENT_BYTES}
{web_access.config_toml()}""")
    started: list[WorkerProcess] = []

    def new_worker(label: str = "worker") -> WorkerProcess:
        worker = WorkerProcess(config_path, tmp_path / f"{label}.log", port,
                               web=web_access).start()
        started.append(worker)
        return worker

    yield {**names, "bootstrap": kafka_broker.bootstrap, "new_worker": new_worker,
           "tmp_path": tmp_path}
    for worker in started:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=30)


# -- the tests -----------------------------------------------------------------------------------

def _lags(samples: dict, topic: str) -> list[float]:
    return [value for (name, labels), value in sorted(samples.items())
            if name == "kpi_consumer_lag_messages" and ("topic", topic) in labels]


def test_every_message_is_counted_duplicate_or_dead_lettered_and_dedup_survives_restart(
        worker_setup: dict) -> None:
    s = worker_setup
    now = datetime.now(timezone.utc)
    valid = valid_events(96, now, prefix=s["app_id"])
    invalid = invalid_messages(now)
    duplicates = valid[5:20] + valid[-3:]  # redeliveries: identical bytes, same key

    messages: list[tuple[bytes | None, bytes | None]] = []
    expected_reason: dict[int, tuple[str, bytes | None, bytes | None]] = {}
    valid_iter = iter(valid)
    for i, event in enumerate(valid_iter):
        messages.append((key_of(event), orjson.dumps(event)))
        if i < len(invalid):
            reason, raw = invalid[i]
            key = f"bad-key-{i}".encode() if i % 2 else None
            expected_reason[len(messages)] = (reason, key, raw)
            messages.append((key, raw))
    messages += [(key_of(e), orjson.dumps(e)) for e in duplicates]

    worker = s["new_worker"]("first")
    worker.wait_ready()
    worker.web.assert_enforced(worker.base)
    positions = produce(s["bootstrap"], s["input"], messages)
    worker.wait_until(all_accounted(worker, len(messages)), "every message to be accounted for")

    samples = worker.metrics()
    o = outcomes(samples)
    assert o == {"consumed": len(messages), "counted": len(valid),
                 "duplicate": len(duplicates), "invalid": len(invalid),
                 "dead_letter_sent": len(invalid)}
    expected_by_reason = Counter(reason for reason, _ in invalid)
    for reason in expected_by_reason:
        assert total(samples, "kpi_events_invalid_total", reason=reason) == \
            expected_by_reason[reason], reason
    by_type = Counter(e["type"] for e in valid)
    for event_type, n in by_type.items():
        assert total(samples, "kpi_events_total", type=event_type, outcome="counted") == n
    # The KPI gauges are exported from the same state (every event is within fiscal year 0 or 1).
    assert samples[("kpi_worker_ready", ())] == 1
    # Consumer lag is exported per input partition and is 0 once everything is read.
    worker.wait_until(lambda: _lags(worker.metrics(), s["input"]) == [0.0] * PARTITIONS,
                      "the consumer lag of every input partition to read 0")
    assert total(samples, "kpi_leads_created", scope="company", period="year") == \
        by_type["lead.created"]

    # The dead-letter topic holds exactly the invalid messages, original bytes and reasons.
    records = consume_all(s["bootstrap"], s["dead_letter"], len(invalid))
    assert len(records) == len(invalid)
    position_of = {positions[index]: index for index in expected_reason}
    seen = set()
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        source = (int(headers["kpi-source-partition"]), int(headers["kpi-source-offset"]))
        assert headers["kpi-source-topic"] == s["input"]
        index = position_of[source]
        reason, key, raw = expected_reason[index]
        assert headers["kpi-reason"] == reason, headers
        assert headers["kpi-detail"]
        assert record.value == raw
        assert record.key == key
        seen.add(index)
    assert seen == set(expected_reason)

    report = worker.report()
    assert report["events"] == {"read": len(messages), "counted": len(valid),
                                "duplicate": len(duplicates), "invalid": len(invalid),
                                "not_visible": 0}
    for bad in ("yesterday", "2026-01-01T00:00:00"):  # not RFC 3339; no zone
        status, body = worker.get(f"/api/kpis?as_of={bad}")
        assert status == 400 and "error" in json.loads(body)

    assert worker.stop(signal.SIGTERM) == 0

    # After a restart the state is back, and redeliveries are still duplicates.
    worker = s["new_worker"]("second")
    worker.wait_ready()
    assert worker.report()["events"]["counted"] == len(valid)
    produce(s["bootstrap"], s["input"], [(key_of(e), orjson.dumps(e)) for e in duplicates])
    worker.wait_until(all_accounted(worker, len(duplicates)), "the redeliveries")
    o = outcomes(worker.metrics())
    assert o["counted"] == 0
    assert o["duplicate"] == len(duplicates)
    # The report's counts are durable: those of the first run are still there.
    assert worker.report()["events"] == {
        "read": len(messages) + len(duplicates), "counted": len(valid),
        "duplicate": 2 * len(duplicates), "invalid": len(invalid), "not_visible": 0}
    assert worker.stop(signal.SIGTERM) == 0


@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(worker_setup: dict) -> None:
    s = worker_setup
    now = datetime.now(timezone.utc)
    valid = valid_events(6000, now, prefix=s["app_id"])
    messages = [(key_of(e), orjson.dumps(e)) for e in valid]
    messages += [(key_of(e), orjson.dumps(e)) for e in valid[::10]]  # 600 redeliveries

    worker = s["new_worker"]("before-kill")
    worker.wait_ready()
    produce(s["bootstrap"], s["input"], messages)
    worker.wait_until(lambda: outcomes(worker.metrics())["counted"] >= len(valid) // 4,
                      "a quarter of the events to be counted")
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL

    worker = s["new_worker"]("after-kill")
    worker.wait_ready()
    worker.wait_until(lambda: worker.report()["events"]["counted"] == len(valid),
                      "every distinct event to be counted")
    worker.wait_until(lambda: worker.events().get("read") == len(messages),
                      "every message to be accounted for")
    time.sleep(3)  # anything still in flight would show up now as a double count
    report = worker.report()
    # Exact across the crash: redone work is recognised by its source offsets, so neither
    # counted nor duplicate grows (before the ledger kept sources, duplicate did).
    assert report["events"] == {"read": len(messages), "counted": len(valid),
                                "duplicate": len(valid[::10]), "invalid": 0,
                                "not_visible": 0}
    # Every event lies within the last 8000 hours, so in fiscal year 0 or 1: the sums over
    # both years must equal the event counts exactly (a double count would exceed them).
    company = {(w["period"], w["offset"]): w["company"]["kpis"] for w in report["windows"]}
    years = [company[("year", 0)], company[("year", 1)]]
    kinds = Counter(e["type"] for e in valid)
    assert sum(k["activities"] for k in years) == kinds["activity.logged"]
    assert sum(k["spend_total"] for k in years) == pytest.approx(50 * kinds["spend.recorded"])
    assert sum(k["leads_created"] for k in years) == kinds["lead.created"]
    log = (s["tmp_path"] / "after-kill.log").read_text(errors="replace")
    assert "did not stop cleanly" in log
    assert worker.stop(signal.SIGTERM) == 0
