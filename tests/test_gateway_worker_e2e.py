"""CRM deliveries -> gateway -> Kafka -> worker: ``/api/kpis`` shows exactly what they describe.

Pipedrive, HubSpot, Salesforce and contract deliveries are posted to a running gateway, then
all of them again in another order (a CRM retrying); a real ``kpi-engine worker`` reads the
input topic. Its report must show the deals, stages and activities the deliveries describe —
each once — and equal the file report over what the gateway produced.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import orjson
import pytest
from reportdiff import diff_reports
from test_ingest_e2e import WorkerProcess

from engine.config import load_config
from engine.kafka_local import free_port
from gateway_fixtures import (
    basic_auth,
    hubspot_event,
    hubspot_headers,
    pipedrive_activity,
    pipedrive_deal,
    pipedrive_delivery,
    salesforce_message,
    sf_opportunity,
)
from gateway_helpers import HUBSPOT_SECRET, HUBSPOT_URL, ROSTER
from gateway_runner import GatewayThread, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PD = basic_auth("kpi", "pd-pass")
T0 = 1_772_442_000_000  # 2026-03-02T09:00:00Z


def write_config(tmp_path, broker, unique_name, port):
    roster = tmp_path / "roster.toml"
    roster.write_text(ROSTER)
    path = tmp_path / "engine.toml"
    path.write_text(f"""
[calendar]
timezone = "Europe/Berlin"
[money]
currency = "EUR"
[[pipeline.stages]]
id = "discovery"
probability = 0.1
category = "pipeline"
[[pipeline.stages]]
id = "proposal"
probability = 0.4
category = "best_case"
[kafka]
bootstrap_servers = "{broker}"
[topics]
input = "{unique_name('in')}"
dead_letter = "{unique_name('dlq')}"
partitions = 2
[worker]
app_id = "{unique_name('app')}"
data_dir = "{tmp_path / 'data'}"
web_host = "127.0.0.1"
web_port = {port}
[people]
roster = "{roster}"
[gateway]
state_topic = "{unique_name('state')}"
[[gateway.sources]]
name = "pipedrive"
kind = "pipedrive"
username = "kpi"
secret = "pd-pass"
stages = {{ "1" = "discovery", "2" = "proposal" }}
[[gateway.sources]]
name = "hubspot"
kind = "hubspot"
secret = "{HUBSPOT_SECRET}"
public_url = "{HUBSPOT_URL}"
stages = {{ "appointmentscheduled" = "discovery", "presentationscheduled" = "proposal" }}
[[gateway.sources]]
name = "salesforce"
kind = "salesforce"
org_id = "00D5e000000KQ2eEAG"
stages = {{ "Prospecting" = "discovery", "Proposal/Price Quote" = "proposal" }}
[[gateway.sources]]
name = "contract"
kind = "contract"
secret = "s3cret-token"
""")
    return path


def deliveries():
    won = pipedrive_deal(1, stage_id=2, status="won", won_time="2026-03-05T15:00:00Z",
                         update_time="2026-03-05T15:00:00Z")
    moved = pipedrive_deal(1, stage_id=2, update_time="2026-03-03T10:00:00Z")
    lost = pipedrive_deal(2, owner=18487522, status="lost", lost_time="2026-03-06T10:00:00Z",
                          update_time="2026-03-06T10:00:00Z", value=300.0)
    return [
        ("pd", pipedrive_delivery("create", pipedrive_deal(1))),
        ("pd", pipedrive_delivery("change", moved, {"stage_id": 1})),
        ("pd", pipedrive_delivery("change", won, {"status": "open"})),
        ("pd", pipedrive_delivery("create", pipedrive_deal(2, owner=18487522, value=300.0))),
        ("pd", pipedrive_delivery("change", lost, {"status": "open"})),
        ("pd", pipedrive_delivery("change", pipedrive_activity(7), {"done": False},
                                  entity="activity")),
        ("hs", orjson.dumps([
            hubspot_event("deal.creation", 501, T0),
            hubspot_event("deal.propertyChange", 501, T0, "amount", "2500"),
            hubspot_event("deal.propertyChange", 501, T0, "dealstage", "appointmentscheduled"),
            hubspot_event("deal.propertyChange", 501, T0, "hubspot_owner_id", "41629780")])),
        ("hs", orjson.dumps([hubspot_event("deal.propertyChange", 501, T0 + 86_400_000,
                                           "dealstage", "presentationscheduled")])),
        ("sf", salesforce_message(sf_opportunity())),
        ("ct", b'{"event_id":"c-lead-1","type":"lead.created",'
               b'"occurred_at":"2026-03-01T08:00:00Z","lead_id":"l-1","team_id":"emea",'
               b'"rep_id":"rep-017"}\n'),
    ]


def post(gw, kind, body):
    if kind == "pd":
        return gw.post("/hooks/pipedrive", body, PD)[0]
    if kind == "hs":
        return gw.post("/hooks/hubspot", body, hubspot_headers(
            HUBSPOT_SECRET, HUBSPOT_URL, body, int(time.time() * 1000)))[0]
    if kind == "sf":
        return gw.post("/hooks/salesforce", body, {"Content-Type": "text/xml"})[0]
    return gw.post("/hooks/contract", body, {"Authorization": "Bearer s3cret-token"})[0]


def test_worker_counts_exactly_what_the_deliveries_describe(kafka_broker, unique_name,
                                                           tmp_path):
    port = free_port()
    config_path = write_config(tmp_path, kafka_broker.bootstrap, unique_name, port)
    config = load_config(config_path)
    worker = WorkerProcess(config_path, tmp_path / "worker.log", port).start()
    try:
        worker.wait_ready()
        worker.wait_until(lambda: "read" in worker.events(), "the worker's state to be served")
        as_of = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with GatewayThread(config) as gw:
            statuses = [post(gw, kind, body) for kind, body in deliveries()]
            once = read_topic(kafka_broker.bootstrap, config.topics.input)
            worker.wait_until(lambda: worker.report(as_of)["events"]["read"] == len(once),
                              f"all {len(once)} messages to be in the report")
            first_report = worker.report(as_of)
            again = deliveries()
            random.Random(5).shuffle(again)  # redelivered, in another order
            statuses += [post(gw, kind, body) for kind, body in again]
            assert set(statuses) == {200}
        records = read_topic(kafka_broker.bootstrap, config.topics.input)
        assert read_topic(kafka_broker.bootstrap, config.topics.dead_letter) == []
        # /api/kpis answers are shared for up to a second: wait for one that saw everything.
        worker.wait_until(lambda: worker.report(as_of)["events"]["read"] == len(records),
                          f"all {len(records)} messages to be in the report")
        report = worker.report(as_of)
        # The redelivered, shuffled deliveries change no number, only the duplicate count.
        assert report["windows"] == first_report["windows"]
        assert report["events"]["counted"] == first_report["events"]["counted"]

        year = next(w for w in report["windows"] if w["period"] == "year" and w["offset"] == 0)
        company = year["company"]["kpis"]
        assert (company["deals_created"], company["deals_won"], company["deals_lost"]) == (4, 1, 1)
        assert company["revenue_won"] == 1200.0
        assert company["activities"] == 1 and company["leads_created"] == 1
        assert company["pipeline_deals"] == 2  # the HubSpot and the Salesforce deal are open
        assert company["pipeline_deals_by_stage"] == {"discovery": 1, "proposal": 1}
        assert company["pipeline_amount"] == 7500.0
        assert company["stage_entries"] == {"discovery": 4, "proposal": 2}
        assert set(year["reps"]) == {"rep-017", "rep-018"}

        events_file = tmp_path / "produced.jsonl"
        events_file.write_bytes(b"".join(r.value + b"\n" for r in records))
        done = subprocess.run([sys.executable, "-m", "engine.cli", "report", "--events",
                               str(events_file), "--as-of", as_of, "--config",
                               str(config_path)], capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        differences = diff_reports(report, orjson.loads(done.stdout))
        assert not differences, differences[:20]
        assert report["events"]["duplicate"] > 0  # the redeliveries, counted once
    finally:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.terminate()
            worker.process.wait(timeout=60)


def test_try_out_path_crm_simulator_to_worker(kafka_broker, unique_name, tmp_path):
    """README's try-out: --write-config, a worker, the gateway, the simulator -> KPIs by rep."""
    import asyncio

    from engine.cli import main
    from gateway.simulator import DEMO_PEOPLE, simulate

    config_path = tmp_path / "try" / "gw.toml"
    assert main(["simulate-crm", "--write-config", str(config_path),
                 "--bootstrap", kafka_broker.bootstrap]) == 0
    port = free_port()
    text = config_path.read_text().replace(
        "[gateway]\n", f'[gateway]\nstate_topic = "{unique_name("state")}"\n')
    config_path.write_text(text + f"""
[topics]
input = "{unique_name('in')}"
dead_letter = "{unique_name('dlq')}"
partitions = 2
[worker]
app_id = "{unique_name('app')}"
data_dir = "{tmp_path / 'data'}"
web_host = "127.0.0.1"
web_port = {port}
""")
    config = load_config(config_path)
    worker = WorkerProcess(config_path, tmp_path / "worker.log", port).start()
    try:
        worker.wait_ready()
        worker.wait_until(lambda: "read" in worker.events(), "the worker's state to be served")
        with GatewayThread(config) as gw:
            result = asyncio.run(simulate(config, gw.url, rate=0, duration=None, count=120,
                                          redeliver=0.2, seed=11))
        assert set(result.statuses) == {200}
        assert read_topic(kafka_broker.bootstrap, config.topics.dead_letter) == []
        records = read_topic(kafka_broker.bootstrap, config.topics.input)
        worker.wait_until(lambda: worker.report()["events"]["read"] == len(records),
                          f"all {len(records)} messages to be in the report")
        report = worker.report()
        assert report["events"]["invalid"] == 0 and report["events"]["duplicate"] > 0
        year = next(w for w in report["windows"] if w["period"] == "year" and w["offset"] == 0)
        assert year["company"]["kpis"]["deals_created"] > 0
        assert set(year["reps"]) & {rep for rep, _, _ in DEMO_PEOPLE}
    finally:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.terminate()
            worker.process.wait(timeout=60)
