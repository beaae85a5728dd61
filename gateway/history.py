"""History import: rows of a CRM's CSV export of deals or activities -> contract events.

Why: a team that connects its CRM today wants last year's windows filled. The webhook gateway
only sees changes from now on; a CSV export holds the past. Rows are mapped with the same ids
as the live gateway (``<source>-deal-<id>``, the same ``event_id`` for a deal's creation), so
importing after the gateway went live counts nothing twice.

Columns: each CRM's standard export, below; ``--map field=Column`` overrides any of them.
Owners in exports are user names or ids: both are looked up in the roster (ids per source,
then display names). Naive times in an export are the account's local time, read in the
configured ``[calendar] timezone``; dates alone are local midnight.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.ids import event_id, local_midnight, money
from engine.people.roster import Person
from gateway.roster import Attribution, UnknownUser

#: field -> column of each CRM's standard export ("Export data" / report export).
COLUMNS: dict[str, dict[str, dict[str, str]]] = {
    "pipedrive": {  # Deals / Activities list view -> Export (field names prefixed by object)
        "deals": {"id": "Deal - ID", "owner": "Deal - Owner", "amount": "Deal - Value",
                  "currency": "Deal - Currency", "stage": "Deal - Stage",
                  "status": "Deal - Status", "created": "Deal - Deal created",
                  "won_time": "Deal - Won time", "lost_time": "Deal - Lost time",
                  "expected_close": "Deal - Expected close date",
                  "customer": "Deal - Organization"},
        "activities": {"id": "Activity - ID", "owner": "Activity - Assigned to user",
                       "type": "Activity - Type", "done": "Activity - Done",
                       "done_time": "Activity - Marked as done time",
                       "deal": "Activity - Deal ID"},
    },
    "hubspot": {  # CRM > Deals > Export (property labels as columns)
        "deals": {"id": "Record ID", "owner": "Deal owner", "amount": "Amount",
                  "stage": "Deal Stage", "created": "Create Date", "close": "Close Date",
                  "customer": "Associated Company IDs"},
        "activities": {"id": "Record ID", "owner": "Activity assigned to",
                       "type": "Activity type", "done_time": "Activity date",
                       "deal": "Associated Deal IDs"},
    },
    "salesforce": {  # Opportunities / Activities report, exported as CSV ("Details Only")
        "deals": {"id": "Opportunity ID", "owner": "Opportunity Owner", "amount": "Amount",
                  "stage": "Stage", "created": "Created Date", "close": "Close Date",
                  "won": "Won", "closed": "Closed", "customer": "Account ID"},
        "activities": {"id": "Activity ID", "owner": "Assigned", "type": "Task Subtype",
                       "done_time": "Date", "status": "Status", "deal": "Opportunity ID"},
    },
}
DEAL_PREFIX = {"pipedrive": "deal", "hubspot": "deal", "salesforce": "opp"}
ACTIVITY_TYPES = {"call": "call", "email": "email", "meeting": "meeting", "demo": "demo",
                  "list email": "email", "calls": "call", "emails": "email", "meetings": "meeting"}
TRUE = {"true", "1", "yes", "done", "x"}


class RowError(ValueError):
    """A row that cannot be imported; the message says why."""


@dataclass(frozen=True, slots=True)
class ImportSettings:
    crm: str  # pipedrive, hubspot or salesforce: which column names and id forms
    source: str  # the gateway source name (ids are shared with the live gateway)
    kind: str  # deals or activities
    zone: ZoneInfo
    attribution: Attribution
    stages: Mapping[str, str]  # CRM stage -> configured stage (the source's 'stages')
    won_stages: frozenset[str] = frozenset({"closedwon", "closed won", "won"})
    lost_stages: frozenset[str] = frozenset({"closedlost", "closed lost", "lost"})
    columns: Mapping[str, str] | None = None


def import_rows(rows: Iterable[Mapping[str, str]], settings: ImportSettings
                ) -> Iterator[tuple[int, list[dict[str, Any]] | RowError]]:
    """``(line, events)`` per row, or ``(line, RowError)``; lines count the header as 1."""
    columns = {**COLUMNS[settings.crm][settings.kind], **(settings.columns or {})}
    for line, row in enumerate(rows, start=2):
        values = {field: (row.get(column) or "").strip() for field, column in columns.items()}
        try:
            if settings.kind == "deals":
                yield line, _deal(values, settings)
            else:
                yield line, _activity(values, settings)
        except RowError as exc:
            yield line, exc
        except (ValueError, KeyError) as exc:
            yield line, RowError(str(exc))


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.lstrip("\ufeff").splitlines()))


def _time(text: str, zone: ZoneInfo) -> str:
    if not text:
        raise RowError("a required time is empty")
    if len(text) == 10:
        return local_midnight(text, zone)
    value = datetime.fromisoformat(text.replace("/", "-"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.isoformat()


def _person(values: Mapping[str, str], settings: ImportSettings) -> Person:
    owner = values.get("owner", "")
    roster = settings.attribution.roster
    person = roster.find(settings.source, owner) if owner else None
    if person is None and owner:
        person = next((p for p in roster.named.values() if p.name == owner), None)
    if person is not None:
        return person
    try:
        return settings.attribution.person(settings.source, owner or None)
    except UnknownUser as exc:
        raise RowError(str(exc)) from None


def _stage(value: str, settings: ImportSettings) -> str | None:
    if not value or not settings.stages:
        return None
    stage = settings.stages.get(value)
    if stage is None:
        raise RowError(f"stage {value!r} is not in the source's 'stages'")
    return stage


def _deal(v: Mapping[str, str], s: ImportSettings) -> list[dict[str, Any]]:
    if not v.get("id"):
        raise RowError("the row has no deal id")
    person = _person(v, s)
    deal_id = f"{s.source}-{DEAL_PREFIX[s.crm]}-{v['id']}"
    created_at = _time(v.get("created", ""), s.zone)
    outcome = _outcome(v, s)
    close_text = v.get("close") or v.get("expected_close") or ""
    created = {
        "event_id": event_id(s.source, DEAL_PREFIX[s.crm] if s.crm == "salesforce" else "deal",
                             v["id"], "created"),
        "type": "deal.created", "occurred_at": created_at, "deal_id": deal_id,
        "team_id": person.team_id, "rep_id": person.rep_id, "amount": money(v.get("amount")),
        "currency": v.get("currency") or None,
        "customer_id": f"{s.source}-org-{v['customer']}" if v.get("customer") else deal_id,
        "stage": None if outcome else _stage(v.get("stage", ""), s),
        "expected_close_at": _time(close_text, s.zone) if close_text and not outcome else None,
    }
    events = [created]
    if outcome:
        when = v.get(f"{outcome}_time") or v.get("close")
        closed_at = _time(when or "", s.zone)
        close = {
            "event_id": event_id(s.source, "import", deal_id, "closed", outcome, closed_at),
            "type": "deal.closed", "occurred_at": closed_at, "deal_id": deal_id,
            "team_id": person.team_id, "rep_id": person.rep_id, "outcome": outcome,
            "customer_id": created["customer_id"], "opened_at": created_at,
        }
        if outcome == "won" or created["amount"] is not None:
            close["amount"] = created["amount"] if created["amount"] is not None else 0.0
            close["currency"] = created["currency"]
        events.append(close)
    return events


def _outcome(v: Mapping[str, str], s: ImportSettings) -> str | None:
    if "status" in v and v["status"]:
        status = v["status"].lower()
        return status if status in ("won", "lost") else None
    if "closed" in v and v.get("closed"):
        if v["closed"].lower() not in TRUE:
            return None
        return "won" if v.get("won", "").lower() in TRUE else "lost"
    stage = v.get("stage", "").lower()
    if stage in s.won_stages:
        return "won"
    if stage in s.lost_stages:
        return "lost"
    return None


def _activity(v: Mapping[str, str], s: ImportSettings) -> list[dict[str, Any]]:
    if "done" in v and v["done"].lower() not in TRUE:
        return []  # not done yet: no activity happened
    if "status" in v and v["status"] and v["status"].lower() != "completed":
        return []
    if not v.get("id"):
        raise RowError("the row has no activity id")
    person = _person(v, s)
    kind = ACTIVITY_TYPES.get(v.get("type", "").lower(), "other")
    deal = v.get("deal")
    return [{
        "event_id": event_id(s.source, "task" if s.crm == "salesforce" else "activity",
                             v["id"], "done"),
        "type": "activity.logged", "occurred_at": _time(v.get("done_time", ""), s.zone),
        "team_id": person.team_id, "rep_id": person.rep_id, "activity_type": kind,
        "deal_id": f"{s.source}-{DEAL_PREFIX[s.crm]}-{deal}" if deal else None,
    }]
