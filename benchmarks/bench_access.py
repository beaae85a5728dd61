"""What an audience's view of ``/api/kpis`` costs on top of the report itself.

    python benchmarks/bench_access.py [--events FILE.jsonl] [--as-of RFC3339] [--rounds N]

Why: a manager's or rep's report is the executive's report cut to their scopes, plus one pass
that finds which teams each rep worked for in the report's span (engine/security/
membership.py). This measures the three parts separately (build the report, find the
memberships, cut the document), best of ``--rounds``, in process CPU time, on the same two
years of generated history as ``bench_report.py`` (made on first use).
"""

from __future__ import annotations

import argparse
import gc
import time

from bench_report import cpu, ensure_default_file

from engine.calendar import Calendar
from engine.config import Config, load_config
from engine.replay import replay_file
from engine.report import build_report
from engine.security.audience import Grant, filter_report
from engine.security.membership import rep_teams
from engine.timestamps import parse_instant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", help="JSONL file (default: the cached 2-year file)")
    parser.add_argument("--config")
    parser.add_argument("--as-of", default="2026-11-01T00:00:00Z")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config) if args.config else Config()
    as_of = parse_instant(args.as_of)
    path = args.events or ensure_default_file()
    load, replay = cpu(lambda: replay_file(path, config))
    cores = [replay.core]
    calendar = Calendar(config.calendar)
    print(f"{path}: {replay.read:,} lines loaded in {load:.1f}s CPU")

    def best(fn) -> float:
        times = []
        for _ in range(args.rounds):
            gc.collect()
            started = time.process_time()
            fn()
            times.append(time.process_time() - started)
        return min(times)

    report = build_report(cores, as_of, config)
    membership = rep_teams(cores, calendar, as_of)
    team = sorted(report["windows"][0]["teams"])[0]
    rep = next(r for r, teams in membership.items() if team in teams)
    t_report = best(lambda: build_report(cores, as_of, config))
    t_members = best(lambda: rep_teams(cores, calendar, as_of))
    print(f"build_report (executive)      {t_report * 1000:8.1f} ms")
    print(f"rep_teams (memberships)       {t_members * 1000:8.1f} ms")
    for grant in (Grant("manager", frozenset({team})), Grant("rep", rep=rep),
                  Grant("wallboard")):
        t_cut = best(lambda: filter_report(report, grant, membership, "counts"))
        total = t_report + t_members + t_cut
        print(f"cut for {grant.audience:<10}            {t_cut * 1000:8.1f} ms   "
              f"-> {grant.audience} view {total * 1000:.1f} ms "
              f"({(total / t_report - 1) * 100:+.0f} % over the executive's)")


if __name__ == "__main__":
    main()
