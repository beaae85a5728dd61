"""The CRM gateway under 200 concurrent senders, beside the raw producer, in one run.

    python benchmarks/bench_gateway.py [--deliveries N] [--senders N] [--batch N]
                                       [--bootstrap HOST:PORT]

One broker, one run. The gateway runs as its own process (``kpi-engine gateway``) and
every scenario posts ``--deliveries`` deliveries from ``--senders`` concurrent HTTP clients
(each sends its next delivery when the last was answered, as CRMs do); a delivery's latency is
from the request to the answer, which the gateway gives only after Kafka acknowledged:

1. ``pipedrive``: one deal created per delivery (HTTP Basic, JSON, roster, decoder, one event).
2. ``hubspot``: a signed delivery of ``deal.creation`` + owner + amount of a new deal (object
   state read and written to the compacted topic: two records, one event); one delivery at a
   time per source, by design.
3. ``contract``: NDJSON deliveries of ``--batch`` events each (bearer token, decoder per line).

Beside them, ``raw producer``: the same idempotent ``acks=all`` aiokafka producer the gateway
uses, with ``--senders`` concurrent tasks each awaiting one event's acknowledgement at a time —
what a gateway delivery of one event costs Kafka alone. Reported: deliveries/s, events/s,
latency p50/p99, the gateway process's CPU seconds per 1,000 deliveries, and the CPU the
senders themselves used (in cores: on a small machine they compete with the gateway).

Without ``--bootstrap`` a local broker is started in a temporary directory (as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, also before a reinstall

from engine.kafka_local import LocalKafka, free_port  # noqa: E402
from gateway.sources.hubspot import signature_v3  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SECRET = "bench-secret"
HUBSPOT_URL = "https://gateway.example.com/hooks/hubspot"
T0_MS = 1_772_442_000_000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def write_config(directory: Path, bootstrap: str, port: int, run: str) -> Path:
    roster = directory / "roster.toml"
    roster.write_text('[[people]]\nrep_id = "rep-1"\nteam_id = "emea"\nname = "Anna"\n'
                      'crm = { pipedrive = "7", hubspot = "7" }\n')
    config = directory / "gateway.toml"
    config.write_text(f"""
[money]
currency = "EUR"
[kafka]
bootstrap_servers = "{bootstrap}"
[topics]
input = "bench-gw-in-{run}"
dead_letter = "bench-gw-dlq-{run}"
partitions = 4
[gateway]
port = {port}
roster = "{roster}"
state_topic = "bench-gw-state-{run}"
[[gateway.sources]]
name = "pipedrive"
kind = "pipedrive"
username = "kpi"
secret = "{SECRET}"
[[gateway.sources]]
name = "hubspot"
kind = "hubspot"
secret = "{SECRET}"
public_url = "{HUBSPOT_URL}"
[[gateway.sources]]
name = "contract"
kind = "contract"
secret = "{SECRET}"
""")
    return config


def pipedrive_deliveries(n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    auth = {"Authorization": "Basic " + base64.b64encode(f"kpi:{SECRET}".encode()).decode(),
            "Content-Type": "application/json"}
    out = []
    for i in range(n):
        body = orjson.dumps({
            "meta": {"action": "create", "entity": "deal", "entity_id": str(i), "version": "2.0"},
            "data": {"id": i, "value": 1000 + i % 500, "currency": "EUR", "status": "open",
                     "stage_id": 1, "owner_id": 7, "org_id": i % 300,
                     "add_time": "2026-03-02T09:00:00Z", "update_time": "2026-03-02T09:00:00Z"},
            "previous": None})
        out.append(("/hooks/pipedrive", body, auth))
    return out


def hubspot_bodies(n: int) -> list[bytes]:
    bodies = []
    for i in range(n):
        base = {"subscriptionId": 1, "portalId": 1, "appId": 1, "attemptNumber": 0,
                "objectId": 10_000 + i, "changeSource": "CRM", "occurredAt": T0_MS + i}
        bodies.append(orjson.dumps([
            {**base, "eventId": 3 * i, "subscriptionType": "deal.creation"},
            {**base, "eventId": 3 * i + 1, "subscriptionType": "deal.propertyChange",
             "propertyName": "amount", "propertyValue": "1500"},
            {**base, "eventId": 3 * i + 2, "subscriptionType": "deal.propertyChange",
             "propertyName": "hubspot_owner_id", "propertyValue": "7"}]))
    return bodies


def contract_deliveries(n: int, batch: int, run: str) -> list[tuple[str, bytes, dict[str, str]]]:
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/x-ndjson"}
    out = []
    for i in range(n):
        lines = [orjson.dumps({"event_id": f"{run}-{i}-{j}", "type": "activity.logged",
                               "occurred_at": "2026-03-02T10:00:00Z", "team_id": "emea",
                               "rep_id": f"rep-{j % 60}", "activity_type": "call"})
                 for j in range(batch)]
        out.append(("/hooks/contract", b"\n".join(lines), headers))
    return out


async def post_all(url: str, deliveries, senders: int, sign_hubspot: bool = False):
    queue = list(reversed(deliveries))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        async def sender() -> None:
            while queue:
                path, body, headers = queue.pop()
                if sign_hubspot:
                    now = str(int(time.time() * 1000))
                    headers = {"Content-Type": "application/json",
                               "X-HubSpot-Request-Timestamp": now,
                               "X-HubSpot-Signature-v3": signature_v3(
                                   SECRET, "POST", HUBSPOT_URL, body, now)}
                started = time.perf_counter()
                async with session.post(path, data=body, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(senders)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, statuses


async def raw_producer(bootstrap: str, n: int, senders: int, run: str):
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=2)
    await producer.start()
    topic = f"bench-gw-in-{run}"
    counter = iter(range(n))
    latencies: list[float] = []

    async def sender() -> None:
        for i in counter:
            value = orjson.dumps({"event_id": f"raw-{run}-{i}", "type": "activity.logged",
                                  "occurred_at": "2026-03-02T10:00:00Z", "team_id": "emea",
                                  "rep_id": "rep-1", "activity_type": "call"})
            started = time.perf_counter()
            await producer.send_and_wait(topic, value, key=b"rep-1")
            latencies.append(time.perf_counter() - started)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(senders)))
        return time.perf_counter() - started, latencies
    finally:
        await producer.stop()


def report(name: str, deliveries: int, events: int, elapsed: float, latencies: list[float],
           cpu: float | None = None, statuses: dict | None = None,
           client_cpu: float | None = None) -> None:
    cpu_text = f" | {cpu / deliveries * 1000:.2f}" if cpu is not None else " | –"
    cpu_text += f" | {client_cpu / elapsed:.2f}" if client_cpu is not None else " | –"
    print(f"| {name} | {deliveries / elapsed:,.0f} | {events / elapsed:,.0f} | "
          f"{percentile(latencies, 50) * 1000:.1f} | {percentile(latencies, 99) * 1000:.1f}"
          f"{cpu_text} |" + (f" statuses {statuses}" if statuses and set(statuses) != {200}
                             else ""), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100, help="events per contract delivery")
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        kafka = None
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            kafka = LocalKafka(directory / "kafka")
            kafka.start()
            bootstrap = kafka.bootstrap
        port = free_port()
        config = write_config(directory, bootstrap, port, run)
        gateway = subprocess.Popen([sys.executable, "-m", "engine.cli", "gateway", "--config",
                                    str(config)], stdout=subprocess.DEVNULL, cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    with urllib.request.urlopen(url + "/ready", timeout=1) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.1)
            print(f"{args.deliveries:,} deliveries per scenario, {args.senders} concurrent "
                  f"senders, contract batches of {args.batch}\n")
            print("| scenario | deliveries/s | events/s | p50 ms | p99 ms | gateway CPU s "
                  "per 1k deliveries | senders' CPU (cores) |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            n = args.deliveries
            client_before = time.process_time()
            elapsed, latencies = asyncio.run(raw_producer(bootstrap, n, args.senders, run))
            report("raw producer (1 event per send, acks=all, idempotent)", n, n, elapsed,
                   latencies, client_cpu=time.process_time() - client_before)
            for name, deliveries, events_each, sign in (
                    ("gateway: pipedrive (1 event per delivery)", pipedrive_deliveries(n), 1,
                     False),
                    ("gateway: hubspot (3 changes -> 1 event + state)",
                     [("/hooks/hubspot", body, {}) for body in hubspot_bodies(n)], 1, True),
                    (f"gateway: contract NDJSON ({args.batch} events per delivery)",
                     contract_deliveries(max(1, n // 10), args.batch, run), args.batch, False)):
                cpu_before = cpu_seconds(gateway.pid)
                client_before = time.process_time()
                elapsed, latencies, statuses = asyncio.run(
                    post_all(url, deliveries, args.senders, sign))
                cpu = cpu_seconds(gateway.pid) - cpu_before
                report(name, len(deliveries), len(deliveries) * events_each, elapsed,
                       latencies, cpu, statuses, time.process_time() - client_before)
        finally:
            gateway.terminate()
            gateway.wait(30)
            if kafka is not None:
                kafka.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
