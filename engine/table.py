"""A readable plain-text rendering of the report for people at a terminal."""

from __future__ import annotations

_COMPANY_ROWS = (
    ("Revenue won", "revenue_won", "money"), ("Deals won", "deals_won", "int"),
    ("Win rate", "win_rate", "pct"), ("Avg deal size", "avg_deal_size", "money"),
    ("Sales cycle (days)", "avg_sales_cycle_days", "num"),
    ("Sales velocity /day", "sales_velocity", "money"),
    ("Growth (to date)", "revenue_growth", "pct"), ("Growth YoY", "revenue_growth_yoy", "pct"),
    ("Leads created", "leads_created", "int"), ("Leads qualified", "leads_qualified", "int"),
    ("Lead conversion", "lead_conversion_rate", "pct"), ("Activities", "activities", "int"),
    ("Active reps", "active_reps", "int"), ("New customers", "new_customers", "int"),
    ("CAC", "cac", "money"), ("Churn rate", "churn_rate", "pct"), ("MRR end", "mrr_end", "money"),
    ("CLV", "clv", "money"),
)
_TEAM_COLUMNS = (("revenue", "revenue_won", "money"), ("won", "deals_won", "int"),
                 ("win rate", "win_rate", "pct"), ("leads q.", "leads_qualified", "int"),
                 ("activities", "activities", "int"), ("reps", "active_reps", "int"))


def _fmt(value: object, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "pct":
        return f"{value * 100:.1f}%"  # type: ignore[operator]
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "num":
        return f"{value:.1f}"
    return str(value)


def render_table(report: dict) -> str:
    lines = [f"KPI report as of {report['as_of']} ({report['timezone']}, {report['currency']})",
             "events: " + ", ".join(f"{k} {v}" for k, v in report["events"].items()), ""]
    for w in report["windows"]:
        title = f"{w['period']} offset {w['offset']}: {w['start']} → {w['end']}"
        lines += [title, "-" * len(title)]
        company = w["company"]
        for label, key, kind in _COMPANY_ROWS:
            value = _fmt(company["kpis"].get(key), kind)
            target = company["targets"].get(key)
            suffix = ""
            if target:
                suffix = (f"   target {_fmt(target['target'], kind)}"
                          f" ({_fmt(target['attainment'], 'pct')})")
            lines.append(f"  {label:<22}{value:>18}{suffix}")
        if w["teams"]:
            header = f"  {'team':<14}" + "".join(f"{c[0]:>14}" for c in _TEAM_COLUMNS)
            lines += ["", header]
            for team, doc in w["teams"].items():
                cells = "".join(f"{_fmt(doc['kpis'].get(k), kind):>14}"
                                for _, k, kind in _TEAM_COLUMNS)
                lines.append(f"  {team:<14}{cells}")
        lines.append("")
    return "\n".join(lines) + "\n"
