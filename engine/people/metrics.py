"""``kpi_rep_info`` and ``kpi_team_info``: the roster's display names as Prometheus series.

Why an info metric and not a label on every KPI: a renamed rep keeps one series (labels stay
ids), and the names are joined on only where they are shown. Each worker (and each gateway)
exports the whole roster with value 1, so several exporters give several copies of one series
that differ only in ``instance``/``job``: a query joins ``max by (rep, rep_name) (kpi_rep_info)``
(docs/metrics.md), never a ``sum``, and the recording rules never read these series, so the
KPIs summed across workers are untouched.

Labels: ``kpi_rep_info{rep, team, rep_name}`` and ``kpi_team_info{team, team_name}`` — ``rep``
and ``team`` are the KPI series' own label names, so ``on(rep)`` and ``on(team)`` join them
directly; the name labels are distinct (``rep_name``, ``team_name``) so that a series can carry
both after two joins.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from engine.people.roster import Roster

REP_INFO = "kpi_rep_info"
TEAM_INFO = "kpi_team_info"


class RosterCollector(Collector):
    """The roster's people and teams, one series each (value 1), on every scrape."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        reps = GaugeMetricFamily(REP_INFO, "A rep's display name and roster team (value 1; "
                                 "join with max by (rep, rep_name)).",
                                 labels=("rep", "team", "rep_name"))
        for person in self.roster.persons():
            reps.add_metric((person.rep_id, person.team_id, person.name), 1)
        teams = GaugeMetricFamily(TEAM_INFO, "A team's display name (value 1; join with "
                                  "max by (team, team_name)).", labels=("team", "team_name"))
        for team_id, name in sorted(self.roster.team_names.items()):
            teams.add_metric((team_id, name), 1)
        yield reps
        yield teams
