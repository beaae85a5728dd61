"""Additive flow measures and their aggregate per scope (company, team, rep).

Why integers in one fixed-size vector: every flow KPI of the contract is a ratio of sums of
counts, money and durations. Kept as exact integers (money in micro-units, cycle time in
microseconds), sums are associative: a window is the sum of its days, a company the sum of
its partitions, and nothing depends on the order in which events arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

(
    LEADS_CREATED,
    LEADS_QUALIFIED,
    ACT_CALL,
    ACT_EMAIL,
    ACT_MEETING,
    ACT_DEMO,
    ACT_OTHER,
    DEALS_CREATED,
    DEALS_WON,
    DEALS_LOST,
    REVENUE_WON,
    CYCLE_SUM_US,
    CYCLE_COUNT,
    SPEND_MARKETING,
    SPEND_SALES,
    NEW_CUSTOMERS,
    MRR_NEW,
) = range(17)
N_MEASURES: Final = 17

MEASURE_NAMES = (
    "leads_created", "leads_qualified",
    "activities_call", "activities_email", "activities_meeting", "activities_demo",
    "activities_other",
    "deals_created", "deals_won", "deals_lost",
    "revenue_won_micros", "sales_cycle_micros", "sales_cycles",
    "spend_marketing_micros", "spend_sales_micros",
    "new_customers", "mrr_new_micros",
)
ACTIVITY_INDEX: Final = {"call": ACT_CALL, "email": ACT_EMAIL, "meeting": ACT_MEETING,
                  "demo": ACT_DEMO, "other": ACT_OTHER}

# Stage flows (SPEC §7.3) follow the fixed measures, three per configured stage, so a core's
# vectors are N_MEASURES + 3 × stages wide: entries into the stage, and the summed length (µs)
# and number of the stays in it that end.
STAGE_ENTRIES: Final = 0
STAGE_STAY_SUM_US: Final = 1
STAGE_STAYS: Final = 2
STAGE_MEASURES: Final = 3


def stage_measure(stage: int, which: int) -> int:
    """The vector index of one stage flow measure (``stage`` counts from 0 in config order)."""
    return N_MEASURES + STAGE_MEASURES * stage + which


def vector_width(n_stages: int) -> int:
    return N_MEASURES + STAGE_MEASURES * n_stages


@dataclass(slots=True, init=False)
class Contribution:
    """One entity's effect on flows at instant ``ts``.

    ``active`` marks a contribution that makes its rep active (SPEC §6.9). ``team``/``rep`` are
    the attribution, ``None`` for company-only effects (spend, customers, MRR). One is made per
    event, so its ``__init__`` is written out for the compiled build (engine/native.py).
    """

    ts: int
    team: str | None
    rep: str | None
    active: bool
    values: tuple[tuple[int, int], ...]  # (measure index, amount)

    def __init__(self, ts: int, team: str | None, rep: str | None, active: bool,
                 values: tuple[tuple[int, int], ...]) -> None:
        self.ts = ts
        self.team = team
        self.rep = rep
        self.active = active
        self.values = values


class Aggregate:
    """Summed measures per scope, plus per-(team, rep) counts of rep-activating contributions.

    ``width`` is the vector length: :data:`N_MEASURES` plus the stage flows of a core with
    stages (:func:`vector_width`); aggregates that are merged have the same width.
    """

    __slots__ = ("company", "teams", "reps", "pairs", "width")

    def __init__(self, width: int = N_MEASURES) -> None:
        self.width = width
        self.company = [0] * width
        self.teams: dict[str, list[int]] = {}
        self.reps: dict[str, list[int]] = {}
        self.pairs: dict[tuple[str | None, str], int] = {}

    def add(self, c: Contribution, sign: int = 1) -> None:
        company = self.company
        team_vec = rep_vec = None
        if c.team is not None:
            team_vec = self.teams.get(c.team)
            if team_vec is None:
                team_vec = self.teams[c.team] = [0] * self.width
        if c.rep is not None:
            rep_vec = self.reps.get(c.rep)
            if rep_vec is None:
                rep_vec = self.reps[c.rep] = [0] * self.width
            if c.active:
                key = (c.team, c.rep)
                self.pairs[key] = self.pairs.get(key, 0) + sign
        for index, amount in c.values:
            amount *= sign
            company[index] += amount
            if team_vec is not None:
                team_vec[index] += amount
            if rep_vec is not None:
                rep_vec[index] += amount

    def merge(self, other: "Aggregate") -> None:
        _add_vec(self.company, other.company)
        for table, other_table in ((self.teams, other.teams), (self.reps, other.reps)):
            for key, vec in other_table.items():
                mine = table.get(key)
                if mine is None:
                    table[key] = vec.copy()
                else:
                    _add_vec(mine, vec)
        pairs = self.pairs
        for pair, n in other.pairs.items():
            pairs[pair] = pairs.get(pair, 0) + n

    def active_reps(self, team: str | None = None) -> int:
        """Distinct reps with a rep-activating contribution (for one team, or company-wide)."""
        if team is None:
            return len({rep for (_, rep), n in self.pairs.items() if n > 0})
        return len({rep for (t, rep), n in self.pairs.items() if n > 0 and t == team})

    def team(self, team: str) -> list[int]:
        return self.teams.get(team) or [0] * self.width

    def rep(self, rep: str) -> list[int]:
        return self.reps.get(rep) or [0] * self.width


def _add_vec(into: list[int], other: list[int]) -> None:
    for i, v in enumerate(other):
        if v:
            into[i] += v
