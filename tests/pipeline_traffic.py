"""A small, living v2 pipeline stamped "now", for the live tests (dashboards and wallboard).

Why here and not the generator: these tests need deals that move through the configured stages
inside the current windows (so stage entries, stays that ended, due amounts and a forecast all
have values today), whatever the generator emits. The events are plain SPEC §7 events, sent
with ``kpi-engine produce``; every deal is created, moved forward stage by stage, and some are
closed, all before ``now``.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

# (id, probability, category), pipeline order.
STAGES = (("discovery", 0.1, "pipeline"), ("qualified", 0.25, "pipeline"),
          ("proposal", 0.5, "best_case"), ("negotiation", 0.75, "commit"),
          ("verbal", 0.9, "commit"))


def stages_toml() -> str:
    """The ``[[pipeline.stages]]`` tables of :data:`STAGES`."""
    return "".join(f'[[pipeline.stages]]\nid = "{sid}"\nprobability = {p}\n'
                   f'category = "{category}"\n' for sid, p, category in STAGES)


def _stamp(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def pipeline_events(pairs: list[tuple[str, str]], now: datetime, *, hours: float = 6.0,
                    deals_per_rep: int = 5, seed: int = 11,
                    prefix: str = "pipe-") -> list[dict]:
    """Deals of every ``(team, rep)`` in ``pairs``, with all events in ``[now − hours, now − 1 min)``.

    Each deal is created in the first stage (amount, expected close around now, within 12
    days, or 40 days out), then moves up one stage at a time a random number of times; about one
    in seven ends with a close (two in three won). So every stage has entries, most have stays
    that ended, and the open pipeline is spread over the stages and categories.
    """
    rng = random.Random(seed)
    events: list[dict] = []
    last = now - timedelta(minutes=1)
    first = now - timedelta(hours=hours)
    span = (last - first).total_seconds()
    n = 0
    for team, rep in pairs:
        for _ in range(deals_per_rep):
            n += 1
            deal = f"{prefix}d{n:04d}"
            moves = rng.randint(0, len(STAGES) - 1)
            closes = rng.random() < 0.15
            steps = 1 + moves + closes
            times = sorted(first + timedelta(seconds=rng.uniform(0, span)) for _ in range(steps))
            amount = float(rng.randrange(5_000, 60_000, 500))
            # A third close "today" (within 20 minutes of now, so due in every current window
            # unless a window ends within those minutes), some 40 days out (never due this
            # month), the rest within the next 12 days.
            r = rng.random()
            days_out = (rng.uniform(-1 / 72, 1 / 72) if r < 0.35 else 40.0 if r < 0.5
                        else rng.uniform(1 / 24, 12))
            base = {"deal_id": deal}
            events.append({"event_id": f"{deal}-c", "type": "deal.created",
                           "occurred_at": _stamp(times[0]), **base, "team_id": team,
                           "rep_id": rep, "amount": amount, "stage": STAGES[0][0],
                           "expected_close_at": _stamp(now + timedelta(days=days_out))})
            for k in range(1, moves + 1):
                events.append({"event_id": f"{deal}-u{k}", "type": "deal.updated",
                               "occurred_at": _stamp(times[k]), **base,
                               "stage": STAGES[k][0]})
            if closes:
                won = rng.random() < 2 / 3
                close = {"event_id": f"{deal}-x", "type": "deal.closed",
                         "occurred_at": _stamp(times[-1]), **base, "team_id": team,
                         "rep_id": rep, "outcome": "won" if won else "lost"}
                if won:
                    close.update(amount=amount, customer_id=f"{prefix}cust-{n:04d}")
                events.append(close)
    return events


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path
