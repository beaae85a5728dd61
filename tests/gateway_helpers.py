"""Shared set-up for the gateway tests: a configuration with one source of each kind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from engine.config import Config, config_from_mapping
from gateway.server import Gateway
from gateway.sources.base import Source
from gateway_fixtures import SF_ORG

HUBSPOT_URL = "https://gateway.example.com/hooks/hubspot"
HUBSPOT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
ROSTER = """
[teams]
emea = "EMEA Enterprise"
dach = "DACH"

[[people]]
rep_id = "rep-017"
team_id = "emea"
name = "Anna Schmidt"
crm = { pipedrive = "18487521", hubspot = "41629779", salesforce = "0055e000001AbCdEAK" }

[[people]]
rep_id = "rep-018"
team_id = "dach"
name = "Jonas Weber"
crm = { pipedrive = "18487522", hubspot = "41629780" }
"""


def gateway_raw(tmp_path: Path, **gateway: Any) -> dict[str, Any]:
    roster = tmp_path / "roster.toml"
    roster.write_text(ROSTER)
    raw: dict[str, Any] = {
        "money": {"currency": "EUR"},
        "calendar": {"timezone": "Europe/Berlin"},
        "pipeline": {"stages": [
            {"id": "discovery", "probability": 0.1, "category": "pipeline"},
            {"id": "proposal", "probability": 0.4, "category": "best_case"}]},
        "people": {"roster": str(roster)},
        "gateway": {"sources": [
            {"name": "contract", "kind": "contract", "secret": "s3cret-token"},
            {"name": "pipedrive", "kind": "pipedrive", "username": "kpi", "secret": "pd-pass",
             "stages": {"1": "discovery", "2": "proposal"}},
            {"name": "hubspot", "kind": "hubspot", "secret": HUBSPOT_SECRET,
             "public_url": HUBSPOT_URL,
             "stages": {"appointmentscheduled": "discovery", "presentationscheduled": "proposal"}},
            {"name": "salesforce", "kind": "salesforce", "org_id": SF_ORG,
             "stages": {"Prospecting": "discovery", "Proposal/Price Quote": "proposal"}},
        ], **gateway},
    }
    return raw


def gateway_config(tmp_path: Path, **gateway: Any) -> Config:
    return config_from_mapping(gateway_raw(tmp_path, **gateway))


class Mapped:
    """What one delivery became: produced events (decoded JSON), dead letters, the rest."""

    def __init__(self, gateway: Gateway, source: Source, body: bytes) -> None:
        self.delivery = asyncio.run(source.map(body))
        records, self.results = gateway.records_for(source, self.delivery)
        topics = gateway.config.topics
        self.events = [orjson.loads(r.value) for r in records if r.topic == topics.input]
        self.dead = [(dict(r.headers)["kpi-reason"].decode(), dict(r.headers)["kpi-detail"].decode(),
                      r.value) for r in records if r.topic == topics.dead_letter]
        self.state = [r for r in records if r.topic == gateway.config.gateway.state_topic]
        if self.delivery.commit is not None:
            self.delivery.commit()

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def source(gateway: Gateway, name: str) -> Source:
    return next(s for s in gateway.sources if s.name == name)
