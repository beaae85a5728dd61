"""What each audience may see: the rules as pure functions over the documents the engine serves.

Why filter the finished document rather than compute less: the report is built by one builder
(:mod:`engine.report`) so that the live numbers equal the file report; an audience's view is
that same document with whole scopes (and, for some audiences, KPIs) taken out. Nothing is
recomputed, so a manager's team numbers are exactly the executive's.

The audiences (docs/security.md):

- ``executive``: everything.
- ``manager``: the company totals, the token's teams, and the reps who worked for those teams
  in the reported span.
- ``rep``: the company totals, the teams the rep worked for in the reported span, the rep's own
  numbers; other reps only as ``[auth] rep_leaderboard`` allows: ``none`` (not at all) or
  ``counts`` (their counts, never an amount of money, never their targets).
- ``wallboard``: the TV view only: the windows and KPIs the wallboard page shows (a token with
  ``teams`` narrows it to those teams and their reps).
- ``metrics``: Prometheus scrapes (``/metrics``) and the event counts, no report.

"The reps of a team" comes from the data: the (team, rep) pairs of rep-activating
contributions (SPEC §6.9) over the report's longest span, so a rep who moves team appears to
the manager of each team the rep worked for in that span (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The endpoints and the audiences that may call them; ``/ready`` is open (no numbers in it).
ENDPOINT_AUDIENCES: dict[str, frozenset[str]] = {
    "/metrics": frozenset({"metrics", "executive"}),
    "/api/kpis": frozenset({"executive", "manager", "rep", "wallboard"}),
    "/api/events": frozenset({"executive", "manager", "rep", "wallboard", "metrics"}),
    "/api/live": frozenset({"executive", "manager", "rep", "wallboard"}),
    "/wallboard": frozenset({"executive", "manager", "rep", "wallboard"}),
    "/wallboard/": frozenset({"executive", "manager", "rep", "wallboard"}),
}
OPEN_ENDPOINTS = frozenset({"/ready"})

#: What the wallboard page reads of the report (engine/wallboard/wallboard.js).
WALLBOARD_WINDOWS = frozenset({("day", 0), ("month", 0), ("month", 1)})
WALLBOARD_KPIS = frozenset({"revenue_won", "deals_won", "leads_qualified", "activities",
                            "win_rate", "lead_conversion_rate", "forecast_commit",
                            "forecast_best_case", "forecast_weighted",
                            "pipeline_deals_by_stage"})
WALLBOARD_REP_KPIS = frozenset({"revenue_won", "deals_won"})
WALLBOARD_TARGETS = frozenset({"revenue_won"})
#: What ``rep_leaderboard = "counts"`` shows of another rep: counts, never money.
COUNT_KPIS = frozenset({"leads_created", "leads_qualified", "activities", "activities_by_type",
                        "deals_created", "deals_won", "deals_lost"})
#: The parts of the report and of a window that are not scoped; anything else a future report
#: adds is left out of a cut view until it is classified here (fail closed).
REPORT_KEYS = frozenset({"as_of", "timezone", "currency", "events"})
WINDOW_KEYS = frozenset({"period", "offset", "start", "end"})


@dataclass(frozen=True, slots=True)
class Grant:
    """Who is asking: an audience and its scope (from a token, or everything when auth is off)."""

    audience: str
    teams: frozenset[str] = frozenset()
    rep: str | None = None
    name: str | None = None

    @property
    def everything(self) -> bool:
        return self.audience == "executive"


EVERYTHING = Grant("executive", name="open (no authentication configured)")


def may_call(grant: Grant, path: str) -> bool:
    """True if ``grant`` may call the endpoint ``path`` at all."""
    return path in OPEN_ENDPOINTS or grant.audience in ENDPOINT_AUDIENCES.get(path, frozenset())


def visible_teams(grant: Grant, rep_teams: Mapping[str, frozenset[str]]) -> frozenset[str] | None:
    """The teams whose totals ``grant`` sees; None means all."""
    if grant.audience == "executive" or (grant.audience == "wallboard" and not grant.teams):
        return None
    if grant.audience in ("manager", "wallboard"):
        return grant.teams
    if grant.audience == "rep" and grant.rep is not None:
        return rep_teams.get(grant.rep, frozenset())
    return frozenset()


def rep_view(grant: Grant, rep: str, rep_teams: Mapping[str, frozenset[str]],
             policy: str) -> str | None:
    """How ``grant`` sees ``rep``: ``"full"``, ``"counts"`` or None (not at all)."""
    if grant.audience == "executive":
        return "full"
    if grant.audience == "rep":
        if rep == grant.rep:
            return "full"
        return "counts" if policy == "counts" else None
    if grant.audience in ("manager", "wallboard"):
        teams = visible_teams(grant, rep_teams)
        if teams is None or rep_teams.get(rep, frozenset()) & teams:
            return "full"
    return None


def filter_report(report: dict[str, Any], grant: Grant,
                  rep_teams: Mapping[str, frozenset[str]], policy: str) -> dict[str, Any]:
    """``report`` (SPEC §5) as ``grant`` may see it; the executive's is ``report`` itself."""
    if grant.everything:
        return report
    if grant.audience not in ("manager", "rep", "wallboard"):
        raise PermissionError(f"the {grant.audience} audience has no report")
    teams = visible_teams(grant, rep_teams)
    wallboard = grant.audience == "wallboard"
    windows = []
    for window in report["windows"]:
        if wallboard and (window["period"], window["offset"]) not in WALLBOARD_WINDOWS:
            continue
        reps = {}
        for rep, doc in window["reps"].items():
            how = rep_view(grant, rep, rep_teams, policy)
            if how == "full":
                reps[rep] = _only(doc, WALLBOARD_REP_KPIS, frozenset()) if wallboard else doc
            elif how == "counts":
                reps[rep] = _only(doc, COUNT_KPIS, frozenset())
        kept = {t: doc for t, doc in window["teams"].items() if teams is None or t in teams}
        if wallboard:
            kept = {t: _only(doc, WALLBOARD_KPIS, WALLBOARD_TARGETS) for t, doc in kept.items()}
        company = (_only(window["company"], WALLBOARD_KPIS, WALLBOARD_TARGETS) if wallboard
                   else window["company"])
        windows.append({**{k: v for k, v in window.items() if k in WINDOW_KEYS},
                        "company": company, "teams": kept, "reps": reps})
    return {**{k: v for k, v in report.items() if k in REPORT_KEYS}, "windows": windows}


def filter_live(document: dict[str, Any], grant: Grant,
                rep_teams: Mapping[str, frozenset[str]], policy: str) -> dict[str, Any]:
    """The ``/api/live`` body as ``grant`` may see it (its team lists cut to visible reps, its
    display names cut to the visible teams and reps)."""
    if grant.everything:
        return document
    teams = visible_teams(grant, rep_teams)
    reps_by_team = {}
    for team, reps in document["reps_by_team"].items():
        if teams is not None and team not in teams:
            continue
        reps_by_team[team] = [r for r in reps if rep_view(grant, r, rep_teams, policy)]
    names = document.get("names", {})
    names = {"reps": {r: n for r, n in names.get("reps", {}).items()
                      if rep_view(grant, r, rep_teams, policy)},
             "teams": {t: n for t, n in names.get("teams", {}).items()
                       if teams is None or t in teams}}
    return {**document, "reps_by_team": reps_by_team, "names": names}


def may_see_team(grant: Grant, team: str, rep_teams: Mapping[str, frozenset[str]]) -> bool:
    """True if ``grant`` may ask for ``team``'s numbers (``/api/live?team=``)."""
    teams = visible_teams(grant, rep_teams)
    return teams is None or team in teams


def _only(doc: dict[str, Any], kpis: frozenset[str], targets: frozenset[str]) -> dict[str, Any]:
    return {"kpis": {k: v for k, v in doc["kpis"].items() if k in kpis},
            "targets": {k: v for k, v in doc.get("targets", {}).items() if k in targets}}
