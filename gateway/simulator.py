"""A CRM traffic simulator: realistic webhook deliveries posted to a running gateway.

Why: a newcomer should see the whole road — CRM -> gateway -> Kafka -> worker -> wallboard —
without a CRM account. For every configured source the simulator plays deals through their
life (created, moved through the mapped stages, won or lost) and activities being done, as
that CRM would post them: Pipedrive v2 ``meta``/``data``/``previous`` with HTTP Basic,
HubSpot one-property events signed with ``X-HubSpot-Signature-v3``, Salesforce SOAP outbound
messages, and NDJSON contract events. Owners are the roster's people of that source. A share
of deliveries is sent twice, as a CRM retrying would, to show that retries count once.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson

from engine.config import Config, GatewaySource
from engine.people.roster import Roster, roster_of
from gateway.sources.hubspot import signature_v3


@dataclass
class SimulationResult:
    posted: int = 0
    statuses: Counter = field(default_factory=Counter)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class _Deal:
    def __init__(self, number: int, owner: str, stages: list[str], amount: float) -> None:
        self.number = number
        self.owner = owner
        self.stages = stages
        self.stage_index = 0
        self.amount = amount
        self.created = _now()
        self.step = 0


class SourcePlayer:
    """Makes the next delivery (path, body, headers) of one source."""

    def __init__(self, source: GatewaySource, owners: list[str], rng: random.Random,
                 currency: str) -> None:
        self.source = source
        self.owners = owners or ["1"]
        self.rng = rng
        self.currency = currency
        self.stages = [crm for crm, _ in source.stages] or ["1"]
        self.open: list[_Deal] = []
        self.numbers = itertools.count(rng.randrange(10_000, 90_000))

    def next_delivery(self) -> tuple[str, bytes, dict[str, str]]:
        roll = self.rng.random()
        if not self.open or (roll < 0.3 and len(self.open) < 50):
            deal = _Deal(next(self.numbers), self.rng.choice(self.owners), self.stages,
                         float(self.rng.randrange(5, 200) * 100))
            self.open.append(deal)
            return self._render("create", deal)
        if roll < 0.55:
            return self._render("activity", self.rng.choice(self.open))
        deal = self.rng.choice(self.open)
        if deal.stage_index + 1 < len(deal.stages) and self.rng.random() < 0.6:
            deal.stage_index += 1
            return self._render("stage", deal)
        self.open.remove(deal)
        return self._render("won" if self.rng.random() < 0.4 else "lost", deal)

    # -- rendering per CRM -----------------------------------------------------------------------

    def _render(self, what: str, deal: _Deal) -> tuple[str, bytes, dict[str, str]]:
        kind = self.source.kind
        deal.step += 1
        if kind == "pipedrive":
            return self._pipedrive(what, deal)
        if kind == "hubspot":
            return self._hubspot(what, deal)
        if kind == "salesforce":
            return self._salesforce(what, deal)
        return self._contract(what, deal)

    def _pipedrive(self, what: str, deal: _Deal) -> tuple[str, bytes, dict[str, str]]:
        now = _iso(_now())
        data = {"id": deal.number, "title": f"Deal {deal.number}", "value": deal.amount,
                "currency": self.currency, "status": "open",
                "stage_id": int(deal.stages[deal.stage_index]) if deal.stages[
                    deal.stage_index].isdigit() else deal.stages[deal.stage_index],
                "owner_id": int(deal.owner) if deal.owner.isdigit() else deal.owner,
                "org_id": deal.number % 97, "add_time": _iso(deal.created), "update_time": now,
                "expected_close_date": None, "won_time": None, "lost_time": None}
        previous: dict[str, Any] | None = None
        entity, action = "deal", "change"
        if what == "create":
            action = "create"
        elif what == "stage":
            previous = {"stage_id": deal.stages[deal.stage_index - 1]}
        elif what in ("won", "lost"):
            data["status"] = what
            data[f"{what}_time"] = now
            previous = {"status": "open"}
        else:
            entity = "activity"
            data = {"id": deal.number * 100 + deal.step, "type": self.rng.choice(
                ["call", "call", "email", "meeting"]), "done": True, "owner_id": data["owner_id"],
                "deal_id": deal.number, "marked_as_done_time": now, "update_time": now,
                "duration": "00:15"}
            previous = {"done": False}
        meta = {"action": action, "entity": entity, "entity_id": str(data["id"]),
                "version": "2.0", "timestamp": now, "id": f"sim-{deal.number}-{deal.step}"}
        token = base64.b64encode(
            f"{self.source.username}:{self.source.secret}".encode()).decode()
        return self.source.path, orjson.dumps({"meta": meta, "data": data, "previous": previous}), {
            "Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def _hubspot(self, what: str, deal: _Deal) -> tuple[str, bytes, dict[str, str]]:
        now = int(time.time() * 1000)

        def change(name: str, value: Any, at: int = now) -> dict[str, Any]:
            return {"eventId": self.rng.randrange(1 << 30), "subscriptionId": 1, "portalId": 1,
                    "appId": 1, "occurredAt": at, "subscriptionType": "deal.propertyChange",
                    "attemptNumber": 0, "objectId": deal.number, "changeSource": "CRM",
                    "propertyName": name, "propertyValue": value}

        if what == "create":
            events = [{"eventId": self.rng.randrange(1 << 30), "subscriptionId": 1,
                       "portalId": 1, "appId": 1, "occurredAt": now,
                       "subscriptionType": "deal.creation", "attemptNumber": 0,
                       "objectId": deal.number, "changeSource": "CRM"},
                      change("amount", str(deal.amount)),
                      change("dealstage", deal.stages[0]),
                      change("hubspot_owner_id", deal.owner)]
        elif what == "stage":
            events = [change("dealstage", deal.stages[deal.stage_index])]
        elif what in ("won", "lost"):
            stages = self.source.won_stages if what == "won" else self.source.lost_stages
            events = [change("dealstage", stages[0] if stages else f"closed{what}")]
        else:
            events = [change("amount", str(deal.amount + 100))]
        body = orjson.dumps(events)
        return self.source.path, body, self.hubspot_headers(body)

    def hubspot_headers(self, body: bytes) -> dict[str, str]:
        """Signed now: HubSpot signs every attempt anew, so a retry is no replay."""
        now = str(int(time.time() * 1000))
        signature = signature_v3(self.source.secret or "", "POST", self.source.public_url or "",
                                 body, now)
        return {"Content-Type": "application/json", "X-HubSpot-Signature-v3": signature,
                "X-HubSpot-Request-Timestamp": now, "X-HubSpot-Signature-Version": "v3"}

    def _salesforce(self, what: str, deal: _Deal) -> tuple[str, bytes, dict[str, str]]:
        now = _now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        created = deal.created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = f"006SIM{deal.number:012d}"
        if what == "activity":
            fields = {"Id": f"00TSIM{deal.number:06d}{deal.step:06d}", "OwnerId": deal.owner,
                      "Status": "Completed", "IsClosed": "true", "TaskSubtype": "Call",
                      "WhatId": record, "CompletedDateTime": now, "LastModifiedDate": now}
            kind = "Task"
        else:
            closed = what in ("won", "lost")
            fields = {"Id": record, "OwnerId": deal.owner, "Amount": str(deal.amount),
                      "StageName": "Closed Won" if what == "won" else "Closed Lost" if closed
                      else deal.stages[deal.stage_index],
                      "IsClosed": str(closed).lower(), "IsWon": str(what == "won").lower(),
                      "CreatedDate": created,
                      "LastModifiedDate": created if what == "create" else now}
            kind = "Opportunity"
        inner = "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in fields.items())
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
            f"<OrganizationId>{self.source.org_id}</OrganizationId>"
            f"<ActionId>04kSIM000000001</ActionId><Notification><Id>04lSIM{deal.number}</Id>"
            f'<sObject xsi:type="sf:{kind}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
            f"{inner}</sObject></Notification></notifications></soapenv:Body>"
            "</soapenv:Envelope>").encode()
        return self.source.path, body, {"Content-Type": "text/xml; charset=utf-8",
                                        "SOAPAction": '""'}

    def _contract(self, what: str, deal: _Deal) -> tuple[str, bytes, dict[str, str]]:
        now = _iso(_now())
        event = {"event_id": f"sim-{self.source.name}-{deal.number}-{deal.step}",
                 "type": "activity.logged", "occurred_at": now, "team_id": "sim",
                 "rep_id": f"sim-{deal.owner}", "activity_type": "call"}
        return self.source.path, orjson.dumps(event) + b"\n", {
            "Authorization": f"Bearer {self.source.secret}",
            "Content-Type": "application/x-ndjson"}


def owners_of(roster: Roster, source: str) -> list[str]:
    return sorted({user for (name, user) in roster.people if name == source})


async def simulate(config: Config, url: str, *, rate: float, duration: float | None,
                   count: int | None = None, redeliver: float = 0.1,
                   seed: int | None = None) -> SimulationResult:
    """Post deliveries to the gateway at ``url`` at ``rate``/s until ``duration`` or ``count``."""
    rng = random.Random(seed)
    roster = roster_of(config)
    players = [SourcePlayer(s, owners_of(roster, s.name), rng, config.money.currency)
               for s in config.gateway.sources]
    if not players:
        raise ValueError("no [[gateway.sources]] configured")
    result = SimulationResult()
    started = time.monotonic()
    async with aiohttp.ClientSession(base_url=url.rstrip("/")) as session:
        for n in itertools.count():
            if count is not None and n >= count:
                break
            if duration is not None and time.monotonic() - started >= duration:
                break
            player = rng.choice(players)
            path, body, headers = player.next_delivery()
            for attempt in range(2 if rng.random() < redeliver else 1):
                if attempt and player.source.kind == "hubspot":
                    await asyncio.sleep(0.002)
                    headers = player.hubspot_headers(body)
                async with session.post(path, data=body, headers=headers) as response:
                    await response.read()
                    result.statuses[response.status] += 1
                    result.posted += 1
            if rate > 0:
                delay = started + (n + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
    return result


DEMO_STAGES = (("discovery", 0.1, "pipeline"), ("qualification", 0.25, "pipeline"),
               ("proposal", 0.5, "best_case"), ("negotiation", 0.75, "commit"))
DEMO_CRM_STAGES = {
    "pipedrive": ("1", "2", "3", "4"),
    "hubspot": ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
                "decisionmakerboughtin"),
    "salesforce": ("Prospecting", "Qualification", "Proposal/Price Quote",
                   "Negotiation/Review"),
}
DEMO_TEAMS = {"emea": "EMEA", "dach": "DACH", "nordics": "Nordics"}
DEMO_PEOPLE = (("rep-001", "emea", "Anna Schmidt"), ("rep-002", "emea", "Luca Rossi"),
               ("rep-003", "emea", "Chloé Martin"), ("rep-004", "dach", "Jonas Weber"),
               ("rep-005", "dach", "Lea Fischer"), ("rep-006", "nordics", "Erik Lund"),
               ("rep-007", "nordics", "Sofia Nieminen"), ("rep-008", "dach", "Paul Bauer"))


def write_demo_config(path: str, *, bootstrap: str = "localhost:9092", port: int = 8088,
                      currency: str = "EUR") -> list[str]:
    """Write a complete engine + gateway configuration and its roster for a local try-out.

    One file serves the worker, the gateway and the simulator: ``[[pipeline.stages]]``, one
    source of each kind with its stage mapping onto them, and a roster whose people have an
    id in every CRM. Secrets are random, written into the file (a try-out, not production).
    Returns the files written.
    """
    import secrets
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    roster = target.with_name(target.stem + "-roster.toml").resolve()
    roster_text = "[teams]\n" + "".join(f'{k} = "{v}"\n' for k, v in DEMO_TEAMS.items())
    for n, (rep, team, name) in enumerate(DEMO_PEOPLE, start=1):
        roster_text += (f'\n[[people]]\nrep_id = "{rep}"\nteam_id = "{team}"\nname = "{name}"\n'
                        f'crm = {{ pipedrive = "{1000 + n}", hubspot = "{5000 + n}", '
                        f'salesforce = "0055e00000DEMO{n:02d}AA" }}\n')
    stages = "".join(f'\n[[pipeline.stages]]\nid = "{sid}"\nprobability = {p}\ncategory = "{c}"\n'
                     for sid, p, c in DEMO_STAGES)

    def stage_map(kind: str) -> str:
        pairs = ", ".join(f'"{crm}" = "{ours}"'
                          for crm, (ours, _, _) in zip(DEMO_CRM_STAGES[kind], DEMO_STAGES))
        return "{ " + pairs + " }"

    config = f"""# Written by `kpi-engine simulate-crm --write-config`: a local try-out of the CRM gateway.
[calendar]
timezone = "Europe/Berlin"
[money]
currency = "{currency}"
[kafka]
bootstrap_servers = "{bootstrap}"
{stages}
[people]
roster = "{roster}"
[gateway]
host = "127.0.0.1"
port = {port}
unknown_user = "default_team"
default_team = "unassigned"

[[gateway.sources]]
name = "pipedrive"
kind = "pipedrive"
username = "kpi-engine"
secret = "{secrets.token_hex(12)}"
stages = {stage_map("pipedrive")}

[[gateway.sources]]
name = "hubspot"
kind = "hubspot"
secret = "{secrets.token_hex(12)}"
public_url = "http://127.0.0.1:{port}/hooks/hubspot"
stages = {stage_map("hubspot")}

[[gateway.sources]]
name = "salesforce"
kind = "salesforce"
org_id = "00D5e000000DEMOEAA"
stages = {stage_map("salesforce")}

[[gateway.sources]]
name = "scripts"
kind = "contract"
secret = "{secrets.token_hex(12)}"
"""
    target.write_text(config, encoding="utf-8")
    roster.write_text(roster_text, encoding="utf-8")
    return [str(target), str(roster)]
