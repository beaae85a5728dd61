"""``kpi-engine import``: CSV exports of deals and activities become contract events."""

from __future__ import annotations

import orjson
import pytest

from engine.cli import main
from gateway.server import Gateway
from gateway_fixtures import pipedrive_deal, pipedrive_delivery
from gateway_helpers import Mapped, gateway_raw, source
from gateway_runner import events_of, read_topic

PIPEDRIVE_DEALS = """\ufeffDeal - ID,Deal - Title,Deal - Owner,Deal - Value,Deal - Currency,Deal - Stage,Deal - Status,Deal - Deal created,Deal - Won time,Deal - Lost time,Deal - Expected close date,Deal - Organization
1,Big one,Anna Schmidt,1200,EUR,1,open,2026-03-02 10:00:00,,,2026-04-30,2
2,Won one,18487522,800,EUR,2,won,2025-11-03 09:00:00,2025-12-01 16:30:00,,,
3,Lost one,Anna Schmidt,,EUR,1,lost,2025-10-01 09:00:00,,2025-10-20 11:00:00,,
4,Nobody's,Someone Else,100,EUR,1,open,2025-10-01 09:00:00,,,,
5,Odd stage,Anna Schmidt,100,EUR,9,open,2025-10-01 09:00:00,,,,
"""

SALESFORCE_TASKS = """Activity ID,Subject,Assigned,Task Subtype,Status,Date,Opportunity ID
00T1,Call,Anna Schmidt,Call,Completed,2026-02-10,0065e00000AbCdEAAV
00T2,Mail,Anna Schmidt,Email,Not Started,2026-02-11,
"""


def write_config(tmp_path):
    raw = gateway_raw(tmp_path)
    lines = ['[money]\ncurrency = "EUR"\n[calendar]\ntimezone = "Europe/Berlin"\n',
             f'[people]\nroster = "{raw["people"]["roster"]}"\n']
    for s in raw["gateway"]["sources"]:
        lines.append("[[gateway.sources]]\n" + "".join(
            f"{k} = {orjson.dumps(v).decode() if not isinstance(v, dict) else _inline(v)}\n"
            for k, v in s.items()))
    path = tmp_path / "config.toml"
    path.write_text("".join(lines))
    return path


def _inline(mapping):
    return "{ " + ", ".join(f'"{k}" = "{v}"' for k, v in mapping.items()) + " }"


def run_import(tmp_path, capsys, csv_text, *args):
    export = tmp_path / "export.csv"
    export.write_text(csv_text, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    status = main(["import", str(export), "--config", str(write_config(tmp_path)),
                   "--output", str(out), *args])
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return status, events, capsys.readouterr().err


def test_pipedrive_deals_export(tmp_path, capsys):
    status, events, errors = run_import(tmp_path, capsys, PIPEDRIVE_DEALS,
                                        "--crm", "pipedrive", "--kind", "deals")
    assert status == 1  # two rows could not be imported, and say so
    assert errors.splitlines() == [
        "5\tpipedrive user Someone Else is not in the roster",
        "6\tstage '9' is not in the source's 'stages'"]
    summary = [(e["type"], e["deal_id"], e["occurred_at"], e.get("outcome"), e.get("amount"),
                e["rep_id"]) for e in events]
    assert summary == [
        ("deal.created", "pipedrive-deal-1", "2026-03-02T10:00:00+01:00", None, 1200.0, "rep-017"),
        ("deal.created", "pipedrive-deal-2", "2025-11-03T09:00:00+01:00", None, 800.0, "rep-018"),
        ("deal.closed", "pipedrive-deal-2", "2025-12-01T16:30:00+01:00", "won", 800.0, "rep-018"),
        ("deal.created", "pipedrive-deal-3", "2025-10-01T09:00:00+02:00", None, None, "rep-017"),
        ("deal.closed", "pipedrive-deal-3", "2025-10-20T11:00:00+02:00", "lost", None, "rep-017"),
    ]
    assert events[0]["stage"] == "discovery"
    assert events[0]["expected_close_at"] == "2026-04-30T00:00:00+02:00"


def test_imported_deal_has_the_live_gateways_event_id(tmp_path, capsys):
    _, events, _ = run_import(tmp_path, capsys, PIPEDRIVE_DEALS, "--crm", "pipedrive",
                              "--kind", "deals")
    from gateway_helpers import gateway_config
    gateway = Gateway(gateway_config(tmp_path))
    live = Mapped(gateway, source(gateway, "pipedrive"),
                  pipedrive_delivery("create", pipedrive_deal(1)))
    assert live.events[0]["event_id"] == events[0]["event_id"]


def test_salesforce_tasks_export_only_completed(tmp_path, capsys):
    status, events, _ = run_import(tmp_path, capsys, SALESFORCE_TASKS, "--crm", "salesforce",
                                   "--kind", "activities")
    assert status == 0
    assert [(e["type"], e["activity_type"], e["occurred_at"], e["deal_id"]) for e in events] == [
        ("activity.logged", "call", "2026-02-10T00:00:00+01:00",
         "salesforce-opp-0065e00000AbCdEAAV")]


def test_hubspot_deals_export_with_a_remapped_column(tmp_path, capsys):
    export = ("Record ID,Deal Name,Owner,Amount,Deal Stage,Create Date,Close Date\n"
              "501,A,Anna Schmidt,900,closedwon,2026-01-05 10:00,2026-01-20 12:00\n")
    status, events, _ = run_import(tmp_path, capsys, export, "--crm", "hubspot",
                                   "--kind", "deals", "--map", "owner=Owner")
    assert status == 0
    assert [(e["type"], e.get("outcome"), e["occurred_at"]) for e in events] == [
        ("deal.created", None, "2026-01-05T10:00:00+01:00"),
        ("deal.closed", "won", "2026-01-20T12:00:00+01:00")]


def test_unknown_map_field_is_a_usage_error(tmp_path, capsys):
    export = tmp_path / "e.csv"
    export.write_text("a\n")
    assert main(["import", str(export), "--crm", "hubspot", "--kind", "deals",
                 "--config", str(write_config(tmp_path)), "--map", "colour=X",
                 "--output", str(tmp_path / "o")]) == 2


@pytest.mark.kafka
def test_import_sends_to_the_input_topic(tmp_path, capsys, kafka_broker, unique_name):
    config = write_config(tmp_path)
    topic = unique_name("in")
    config.write_text(config.read_text()
                      + f'\n[kafka]\nbootstrap_servers = "{kafka_broker.bootstrap}"\n'
                      f'[topics]\ninput = "{topic}"\npartitions = 2\n')
    export = tmp_path / "tasks.csv"
    export.write_text(SALESFORCE_TASKS)
    assert main(["import", str(export), "--crm", "salesforce", "--kind", "activities",
                 "--config", str(config)]) == 0
    assert "sent 1 events from 2 rows" in capsys.readouterr().out
    [event] = events_of(read_topic(kafka_broker.bootstrap, topic))
    assert (event["type"], event["rep_id"]) == ("activity.logged", "rep-017")
