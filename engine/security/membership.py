"""Which teams each rep worked for in the span a report covers (for managers' and reps' views).

Why from the data and not from a roster: the engine has no roster; team and rep ids come with
the CRM events. A rep belongs to a team for access purposes if the rep has a rep-activating
contribution (SPEC §6.9) for that team anywhere in the report's span, from the start of its
oldest window to ``as_of``.
"""

from __future__ import annotations

from engine.calendar import REPORT_WINDOWS, Calendar
from engine.core import Core
from engine.view import View


def rep_teams(cores: list[Core], calendar: Calendar, as_of: int) -> dict[str, frozenset[str]]:
    """``{rep: teams}`` from the (team, rep) pairs of ``[oldest window start, as_of)``."""
    lo = min(calendar.window(period, offset, as_of).start for period, offset in REPORT_WINDOWS)
    teams: dict[str, set[str]] = {}
    if lo < as_of:
        for (team, rep), n in View(cores, calendar, as_of).flows(lo, as_of).pairs.items():
            if n > 0 and team is not None:
                teams.setdefault(rep, set()).add(team)
    return {rep: frozenset(ts) for rep, ts in teams.items()}
