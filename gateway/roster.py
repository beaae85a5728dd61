"""The people roster: which rep and team a CRM user is, and what they are called.

Why a roster: CRMs identify people by their own user ids (Pipedrive ``18487521``, HubSpot owner
``41629779``, Salesforce ``0055e000001AbCdEAK``), while the KPIs count by our ``rep_id`` and
``team_id`` and a wallboard should show "Anna Schmidt", not an id. One file maps them all.

TOML::

    [teams]
    emea = "EMEA Enterprise"

    [[people]]
    rep_id = "rep-017"
    team_id = "emea"
    name = "Anna Schmidt"
    crm = { pipedrive = "18487521", hubspot = "41629779" }   # keys: source names

CSV (one row per CRM user id; ``team_name`` optional)::

    source,user_id,rep_id,team_id,name,team_name
    pipedrive,18487521,rep-017,emea,Anna Schmidt,EMEA Enterprise

A user the roster does not know goes to ``[gateway] default_team`` (rep id
``<source>-<user id>``) or to the dead-letter topic, as ``[gateway] unknown_user`` says.
Salesforce ids match in their 15- and 18-character forms.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import ConfigError, GatewayConfig


@dataclass(frozen=True, slots=True)
class Person:
    rep_id: str
    team_id: str
    name: str


@dataclass(slots=True)
class Roster:
    """CRM user ids (per source name) to people; team ids to display names."""

    people: dict[tuple[str, str], Person] = field(default_factory=dict)
    team_names: dict[str, str] = field(default_factory=dict)

    def find(self, source: str, user_id: str) -> Person | None:
        person = self.people.get((source, user_id))
        if person is None and len(user_id) == 18:  # Salesforce: the 15-character form
            person = self.people.get((source, user_id[:15]))
        return person

    def add(self, source: str, user_id: str, person: Person) -> None:
        self.people[(source, user_id)] = person
        if len(user_id) == 18:
            self.people.setdefault((source, user_id[:15]), person)


class UnknownUser(LookupError):
    """The user is not in the roster and the policy is to dead-letter."""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Roster plus the unknown-user policy: the one place that turns a CRM user into a rep."""

    roster: Roster
    unknown_user: str = "dead_letter"
    default_team: str | None = None

    def person(self, source: str, user_id: object) -> Person:
        """The rep for ``user_id`` of ``source``; raises :class:`UnknownUser` per the policy."""
        if user_id is None or user_id == "" or isinstance(user_id, bool):
            raise UnknownUser(f"the {source} record has no owner")
        key = str(user_id)
        person = self.roster.find(source, key)
        if person is not None:
            return person
        if self.unknown_user == "default_team" and self.default_team:
            return Person(rep_id=f"{source}-{key}", team_id=self.default_team, name=key)
        raise UnknownUser(f"{source} user {key} is not in the roster")


def attribution(config: GatewayConfig) -> Attribution:
    roster = load_roster(config.roster) if config.roster else Roster()
    return Attribution(roster, config.unknown_user, config.default_team)


def load_roster(path: str | Path) -> Roster:
    """Read a ``.toml`` or ``.csv`` roster; a broken one is a :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"[gateway] roster {p}: {exc.strerror}") from None
    if p.suffix.lower() == ".csv":
        return _from_csv(p, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"[gateway] roster {p} is not valid TOML: {exc}") from None
    return _from_toml(p, raw)


def _text(where: str, value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _from_toml(p: Path, raw: dict) -> Roster:
    roster = Roster()
    teams = raw.get("teams", {})
    if not isinstance(teams, dict):
        raise ConfigError(f"roster {p}: [teams] must map team ids to names")
    for team_id, name in teams.items():
        roster.team_names[team_id] = _text(f"roster {p} [teams]", name, team_id)
    for i, entry in enumerate(raw.get("people", []), start=1):
        where = f"roster {p} [[people]] #{i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        person = Person(_text(where, entry.get("rep_id"), "rep_id"),
                        _text(where, entry.get("team_id"), "team_id"),
                        _text(where, entry.get("name", entry.get("rep_id")), "name"))
        crm = entry.get("crm", {})
        if not isinstance(crm, dict):
            raise ConfigError(f"{where}: 'crm' must map source names to user ids")
        for source, user_id in crm.items():
            ids = user_id if isinstance(user_id, list) else [user_id]
            for one in ids:
                if isinstance(one, bool) or not isinstance(one, (str, int)):
                    raise ConfigError(f"{where}: crm.{source} must be a user id")
                _add_unique(roster, where, source, str(one), person)
    return roster


def _from_csv(p: Path, text: str) -> Roster:
    roster = Roster()
    reader = csv.DictReader(text.splitlines())
    needed = {"source", "user_id", "rep_id", "team_id"}
    if not reader.fieldnames or not needed <= set(reader.fieldnames):
        raise ConfigError(f"roster {p}: the header must name {', '.join(sorted(needed))}")
    for line, row in enumerate(reader, start=2):
        where = f"roster {p} line {line}"
        person = Person(_text(where, row["rep_id"], "rep_id"),
                        _text(where, row["team_id"], "team_id"),
                        (row.get("name") or row["rep_id"]).strip())
        if row.get("team_name"):
            roster.team_names[person.team_id] = row["team_name"].strip()
        _add_unique(roster, where, _text(where, row["source"], "source"),
                    _text(where, row["user_id"], "user_id"), person)
    return roster


def _add_unique(roster: Roster, where: str, source: str, user_id: str, person: Person) -> None:
    existing = roster.people.get((source, user_id))
    if existing is not None and existing != person:
        raise ConfigError(f"{where}: {source} user {user_id} is already {existing.rep_id}")
    roster.add(source, user_id, person)


class RosterCollector:
    """``kpi_rep_info`` and ``kpi_team_info``: display names to join onto the KPI series.

    Prometheus labels stay ids (``rep``, ``team``); a dashboard or the wallboard joins the name
    in, e.g. ``kpi:revenue_won * on(rep) group_left(name) kpi_rep_info``, so a renamed rep
    keeps one series.
    """

    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def collect(self):  # noqa: ANN201 (prometheus_client's protocol)
        from prometheus_client.core import GaugeMetricFamily

        reps = GaugeMetricFamily("kpi_rep_info", "A rep's display name and team (value 1).",
                                 labels=("rep", "team", "name"))
        for person in sorted(set(self.roster.people.values()), key=lambda p: p.rep_id):
            reps.add_metric((person.rep_id, person.team_id, person.name), 1)
        teams = GaugeMetricFamily("kpi_team_info", "A team's display name (value 1).",
                                  labels=("team", "name"))
        for team_id, name in sorted(self.roster.team_names.items()):
            teams.add_metric((team_id, name), 1)
        yield reps
        yield teams
