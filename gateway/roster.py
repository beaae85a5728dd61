"""Attribution: which rep a CRM user is, by the roster and the gateway's unknown-user policy.

The roster itself (file formats, loading) is :mod:`engine.people.roster`, shared with the
worker, which names reps and teams from the same file. A CRM user the roster does not know goes
to ``[gateway] default_team`` (rep id ``<source>-<user id>``) or to the dead-letter topic, as
``[gateway] unknown_user`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Config
from engine.people.roster import Person, Roster, roster_of


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


def attribution(config: Config) -> Attribution:
    """The configured roster (``[people] roster``) with ``[gateway]``'s unknown-user policy."""
    return Attribution(roster_of(config), config.gateway.unknown_user,
                       config.gateway.default_team)
