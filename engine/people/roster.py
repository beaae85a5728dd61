"""The people roster: which rep and team a CRM user is, and what reps and teams are called.

Why a roster: CRMs identify people by their own user ids (Pipedrive ``18487521``, HubSpot owner
``41629779``, Salesforce ``0055e000001AbCdEAK``), while the KPIs count by our ``rep_id`` and
``team_id`` and a wallboard should show "Anna Schmidt", not an id. One file maps them all, named
by one configuration key, ``[people] roster``: the gateway reads it to attribute CRM users, the
worker to name reps and teams on the wallboard and in ``kpi_rep_info``/``kpi_team_info``
(:mod:`engine.people.metrics`), so names work whether events come through a gateway or not.
Why in ``engine``: both services read it, and the gateway and the worker import the engine,
never each other.

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

A person needs no ``crm`` ids (a roster for a worker fed from files only names reps). What the
gateway does with a CRM user the roster does not know is its own policy (``gateway.roster``).
Salesforce ids match in their 15- and 18-character forms.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import Config, ConfigError


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
    #: rep id -> person, with or without CRM ids (the names the worker shows)
    named: dict[str, Person] = field(default_factory=dict)

    def rep_names(self) -> dict[str, str]:
        """Rep id -> display name."""
        return {rep: person.name for rep, person in self.named.items()}

    def persons(self) -> list[Person]:
        """Every person once, by rep id."""
        return [self.named[rep] for rep in sorted(self.named)]

    def name(self, person: Person) -> None:
        """Record ``person`` under its rep id (the same rep id twice must be the same person)."""
        existing = self.named.get(person.rep_id)
        if existing is not None and existing != person:
            raise ConfigError(f"roster: rep {person.rep_id} is listed twice, as "
                              f"{existing.name!r} ({existing.team_id}) and {person.name!r} "
                              f"({person.team_id})")
        self.named[person.rep_id] = person

    def find(self, source: str, user_id: str) -> Person | None:
        person = self.people.get((source, user_id))
        if person is None and len(user_id) == 18:  # Salesforce: the 15-character form
            person = self.people.get((source, user_id[:15]))
        return person

    def add(self, source: str, user_id: str, person: Person) -> None:
        self.name(person)
        self.people[(source, user_id)] = person
        if len(user_id) == 18:
            self.people.setdefault((source, user_id[:15]), person)


def roster_of(config: Config) -> Roster:
    """The configured roster (``[people] roster``), or an empty one."""
    return load_roster(config.people.roster) if config.people.roster else Roster()


def load_roster(path: str | Path) -> Roster:
    """Read a ``.toml`` or ``.csv`` roster; a broken one is a :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"[people] roster {p}: {exc.strerror}") from None
    if p.suffix.lower() == ".csv":
        return _from_csv(p, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"[people] roster {p} is not valid TOML: {exc}") from None
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
        _name(roster, where, person)
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
    needed = {"rep_id", "team_id"}
    if not reader.fieldnames or not needed <= set(reader.fieldnames):
        raise ConfigError(f"roster {p}: the header must name {', '.join(sorted(needed))} "
                          "(and source, user_id for the gateway)")
    for line, row in enumerate(reader, start=2):
        where = f"roster {p} line {line}"
        person = Person(_text(where, row["rep_id"], "rep_id"),
                        _text(where, row["team_id"], "team_id"),
                        (row.get("name") or row["rep_id"]).strip())
        if row.get("team_name"):
            roster.team_names[person.team_id] = row["team_name"].strip()
        source, user_id = (row.get("source") or "").strip(), (row.get("user_id") or "").strip()
        if not source and not user_id:  # a name only (a worker fed from files)
            _name(roster, where, person)
            continue
        _add_unique(roster, where, _text(where, source, "source"),
                    _text(where, user_id, "user_id"), person)
    return roster


def _name(roster: Roster, where: str, person: Person) -> None:
    try:
        roster.name(person)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _add_unique(roster: Roster, where: str, source: str, user_id: str, person: Person) -> None:
    existing = roster.people.get((source, user_id))
    if existing is not None and existing != person:
        raise ConfigError(f"{where}: {source} user {user_id} is already {existing.rep_id}")
    _name(roster, where, person)
    roster.add(source, user_id, person)


