"""The committed dashboards: fresh, well-formed, and reading only what the engine records.

Grafana publishes no machine-readable dashboard schema in the SDK wheel or on PyPI, so the
shape is checked by a strict round trip through grafana-foundation-sdk's own models for the
pinned Grafana version (a field the model does not know would be lost, and the test fails),
plus structural checks. Every PromQL expression is parsed by ``promtool`` after template
variables are substituted, every metric it names must be documented and recorded, every
selector must be able to match a recorded series, and no panel aggregates a ratio.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.config import Config, config_from_mapping  # noqa: E402
from grafana import build  # noqa: E402
from grafana.promql import (  # noqa: E402
    NAME_INFO,
    WINDOWS,
    name_option_regex,
    name_options,
    named,
)
from grafana.settings import DashboardSettings  # noqa: E402

DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"
RECORDING = ROOT / "prometheus" / "rules" / "kpi_recording.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
PROMTOOL = shutil.which("promtool")
EXPECTED_UIDS = {"executive.json": "kpi-executive", "sales-manager.json": "kpi-sales-manager",
                 "rep.json": "kpi-rep", "wallboard.json": "kpi-wallboard"}
FILES = sorted(EXPECTED_UIDS)

# Template variables -> a value that keeps the expression valid PromQL.
SUBSTITUTIONS = {
    "period": "month", "team": "emea", "rep": "r-1", "__interval": "1m",
    "__rate_interval": "1m", "__range": "1h", "__range_s": "3600",
}
KPI_LABELS = {"period", "offset", "scope", "team", "rep", "activity_type", "kpi", "category",
              "type", "outcome", "reason", "stage"}
# Rules recorded for offset-0 windows only (docs/metrics.md, SPEC §7.4/§7.5): the open pipeline
# is a point in time "now", the forecast and the pacing figures belong to the current window.
CURRENT_WINDOW_ONLY = {
    "kpi:pipeline_deals", "kpi:pipeline_amount", "kpi:pipeline_weighted",
    "kpi:pipeline_due_amount", "kpi:pipeline_due_weighted", "kpi:pipeline_deals_by_stage",
    "kpi:pipeline_amount_by_stage", "kpi:pipeline_weighted_by_stage",
    "kpi:pipeline_amount_by_category", "kpi:pipeline_due_amount_by_category",
    "kpi:forecast_commit", "kpi:forecast_best_case", "kpi:forecast_weighted",
    "kpi:target_expected", "kpi:target_pace", "kpi:target_projection", "kpi:target_coverage",
    "kpi:target_forecast_attainment"}
# Pipeline ratios: never summed or averaged over scopes (their parts are).
PIPELINE_RATIOS = {"kpi:target_pace", "kpi:target_coverage", "kpi:target_forecast_attainment",
                   "kpi:target_expected", "kpi:target_projection", "kpi:avg_days_in_stage"}
AGGREGATIONS = ("sum", "avg", "min", "max", "count", "count_values", "stddev", "stdvar",
                "quantile", "group", "avg_over_time", "sum_over_time", "max_over_time",
                "min_over_time", "quantile_over_time")


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return dashboard.get("templating", {}).get("list", [])


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every panel query."""
    return [(f'panel {p["id"]} "{p["title"]}" {t["refId"]}', t["expr"])
            for p in data_panels(dashboard) for t in p.get("targets", [])]


def variable_query(variable: dict[str, Any]) -> tuple[str, str, str | None]:
    """``("label_values", selector, label)`` or ``("query_result", expr, None)``: the two
    Prometheus variable queries the dashboards use."""
    query = variable["query"]
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    if m:
        return "label_values", m.group(1), m.group(2)
    m = re.fullmatch(r"query_result\((.+)\)", query, flags=re.DOTALL)
    assert m, f"variable {variable['name']}: expected label_values or query_result: {query}"
    return "query_result", m.group(1), None


def variable_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every query variable: a ``label_values`` selector or the expression
    of a ``query_result``."""
    return [(f"variable {v['name']}", variable_query(v)[1])
            for v in variables(dashboard) if v["type"] == "query"]


def substitute(expr: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name.isdigit():  # a label_replace capture group, not a variable
            return m.group(0)
        assert name in SUBSTITUTIONS, f"unknown template variable ${name} in {expr}"
        return SUBSTITUTIONS[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def without_name_joins(expr: str) -> str:
    """``expr`` without the roster-name lookups (``grafana.promql.NAME_INFO``): they read the
    info series, not a KPI, and their ``max``/``topk`` collapse copies of one name, not values."""
    for lookup in NAME_INFO.values():
        expr = expr.replace(lookup, "kpi:names")
    return expr


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bkpi[:_][A-Za-z0-9_:]*", without_strings(expr)))


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric, {label: (operator, value)}) of every ``kpi…{...}`` selector."""
    out = []
    for metric, body in re.findall(r"\b(kpi[:_][A-Za-z0-9_:]*)\{([^}]*)\}", expr):
        matchers = {name: (op, value) for name, op, value in
                    re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"', body)}
        out.append((metric, matchers))
    return out


def recorded_names() -> set[str]:
    return set(re.findall(r"^\s*- record:\s*(\S+)\s*$", RECORDING.read_text(), flags=re.M))


def documented_names() -> set[str]:
    return set(re.findall(r"`(kpi[:_][A-Za-z0-9_:]*)", METRICS_DOC.read_text()))


def derived_names() -> set[str]:
    """The ratio-like rules of docs/metrics.md's "Derived KPIs" table: never aggregate them."""
    text = METRICS_DOC.read_text()
    section = text.split("### Derived KPIs", 1)[1].split("###", 1)[0]
    return set(re.findall(r"^\| `(kpi:[a-z_]+)`", section, flags=re.M)) | {
        "kpi:events_invalid:ratio_rate5m"} | PIPELINE_RATIOS


# -- fresh and well-formed ------------------------------------------------------------------


def test_committed_json_is_not_stale(tmp_path: Path):
    written = build.write(tmp_path, DashboardSettings())
    committed = sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))
    assert sorted(p.name for p in written) == committed, \
        "dashboard files differ from the generator's: run python -m grafana.build"
    for path in written:
        assert path.read_bytes() == (DASHBOARDS_DIR / path.name).read_bytes(), \
            f"grafana/dashboards/{path.name} is stale: run python -m grafana.build"
    assert build.stale_files(DASHBOARDS_DIR, DashboardSettings()) == []


def test_check_mode_reports_a_stale_file(tmp_path: Path):
    build.write(tmp_path, DashboardSettings())
    (tmp_path / "rep.json").write_text("{}\n")
    (tmp_path / "old.json").write_text("{}\n")
    assert build.stale_files(tmp_path, DashboardSettings()) == [
        "old.json: extra (no generator)", "rep.json: differs from its generator"]
    assert build.main(["--out", str(tmp_path), "--check"]) == 1


def test_the_committed_build_uses_the_engine_defaults():
    assert DashboardSettings() == DashboardSettings.from_config(Config())


def test_engine_calendar_and_currency_shape_a_custom_build():
    config = config_from_mapping({
        "calendar": {"timezone": "Europe/Berlin", "week_start": "sunday",
                     "fiscal_year_start_month": 4},
        "money": {"currency": "EUR"}})
    settings = DashboardSettings.from_config(config)
    model = json.loads(build.render_all(settings)["executive.json"])
    assert (model["timezone"], model["weekStart"], model["fiscalYearStartMonth"]) == \
        ("Europe/Berlin", "sunday", 3)
    units = {p["fieldConfig"]["defaults"].get("unit") for p in data_panels(model)}
    assert "currencyEUR" in units and "currencyUSD" not in units
    assert DashboardSettings(currency="CAD").money_unit == "suffix: CAD"


@pytest.mark.parametrize("name", FILES)
def test_round_trips_through_the_sdk_models(name: str):
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    data = load(name)
    again = json.loads(JSONEncoder(sort_keys=True).encode(Dashboard.from_json(data)))
    assert again == data


@pytest.mark.parametrize("name", FILES)
def test_identity_and_data_source_are_fixed(name: str):
    d = load(name)
    assert d["uid"] == EXPECTED_UIDS[name] and len(d["uid"]) <= 40
    assert "sales-kpis" in d["tags"]
    assert d["timezone"] == "utc"  # the engine's default zone, as committed
    for panel in data_panels(d):
        assert panel["datasource"] == {"type": "prometheus", "uid": "kpi-prometheus"}, \
            panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "kpi-prometheus"
    for v in variables(d):
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "kpi-prometheus"


@pytest.mark.parametrize("name", FILES)
def test_panel_ids_are_unique_and_the_grid_has_no_overlap(name: str):
    d = load(name)
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for p in panels(d):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f'{p["title"]} overlaps panel {cells[(x, y)]}'
                cells[(x, y)] = p["id"]


@pytest.mark.parametrize("name", FILES)
def test_kpi_panels_say_their_window_is_the_engines(name: str):
    for panel in data_panels(load(name)):
        description = panel.get("description", "")
        assert description, f'{panel["title"]}: no description'
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if 'offset="' in exprs:
            assert "time zone" in description and "time range" in description, panel["title"]


def test_sales_manager_variables_narrow_reps_to_teams():
    by_name = {v["name"]: v for v in variables(load("sales-manager.json"))}
    teams = name_options('kpi:leads_created{scope="team"}', "team")
    assert by_name["team"]["query"] == f"query_result({teams})"
    assert by_name["team"]["multi"] and by_name["team"]["includeAll"]
    assert by_name["team"]["allValue"] == ".*"
    reps = name_options('kpi_rep_contributions{team=~"$team"}', "rep")
    assert by_name["rep"]["query"] == f"query_result({reps})"
    assert by_name["rep"]["multi"]
    exprs = " ".join(e for _, e in panel_exprs(load("sales-manager.json")))
    assert 'team=~"$team"' in exprs and 'rep=~"$rep"' in exprs
    assert 'kpi:events:rate5m{type="activity.logged"' in exprs


@pytest.mark.parametrize("name", FILES)
def test_rep_and_team_dropdowns_offer_names_with_ids_as_values(name: str):
    """The ``rep`` and ``team`` variables read the roster-name join (unlisted ids kept) and
    split each line into text (the name) and value (the id) with named regex groups;
    tests/test_names_prometheus.py runs them against Prometheus the way Grafana does."""
    for v in variables(load(name)):
        if v["name"] not in ("rep", "team"):
            continue
        key = v["name"]
        kind, expr, _ = variable_query(v)
        assert kind == "query_result", (name, key, v["query"])
        assert expr.startswith(f"group by ({key}, {key}_name) (("), (name, expr)
        assert NAME_INFO[key] in expr and f"or ignoring({key}_name)" in expr, (name, expr)
        assert v["regex"] == name_option_regex(key)
        assert "(?<text>" in v["regex"] and "(?<value>" in v["regex"]
        assert "$" not in v["regex"]  # Grafana would interpolate it as a variable


def test_rep_dashboard_is_one_rep_against_their_targets():
    d = load("rep.json")
    (rep,) = [v for v in variables(d) if v["name"] == "rep"]
    assert rep["type"] == "query" and not rep["multi"]
    exprs = [e for _, e in panel_exprs(d)]
    assert any(e.startswith("kpi:target_attainment{") and 'rep="$rep"' in e for e in exprs)
    assert all('rep="$rep"' in e for e in exprs)


def test_executive_shows_forecast_against_target_and_coverage():
    d = load("executive.json")
    by_title = {p["title"]: [t["expr"] for t in p["targets"]] for p in data_panels(d)}
    forecast = " ".join(by_title["Forecast vs target"])
    for metric in ("kpi:forecast_commit", "kpi:forecast_best_case", "kpi:forecast_weighted",
                   "kpi:revenue_won"):
        assert f'{metric}{{scope="company", period="$period", offset="0"}}' in forecast, metric
    assert 'kpi:target{kpi="revenue_won", scope="company", period="$period"}' in forecast
    assert by_title["Pipeline coverage"] == [
        'kpi:target_coverage{scope="company", period="$period", offset="0", kpi="revenue_won"}']
    assert any("kpi:target_forecast_attainment" in e for e in by_title[
        "Weighted forecast attainment"])
    team_table = " ".join(by_title["Team comparison"])
    assert "kpi:forecast_weighted" in team_table and "kpi:target_coverage" in team_table


def test_sales_manager_shows_the_chosen_teams_pipeline_by_stage():
    d = load("sales-manager.json")
    panels_by_title = {p["title"]: p for p in data_panels(d)}
    table = panels_by_title["Pipeline by stage"]
    exprs = [t["expr"] for t in table["targets"]]
    for metric in ("kpi:pipeline_deals_by_stage", "kpi:pipeline_amount_by_stage",
                   "kpi:pipeline_weighted_by_stage", "kpi:stage_entries",
                   "kpi:stage_stay_seconds_sum", "kpi:stage_stays"):
        (expr,) = [e for e in exprs if metric + "{" in e] or [None]
        assert expr is not None, metric
        # Summed over the chosen teams per stage: exact, since these are additive parts.
        assert expr.startswith("sum by (stage) (") and 'team=~"$team"' in expr, expr
    mean_days = [e for e in exprs if "kpi:stage_stays" in e]
    assert mean_days and all(e.endswith("/ 86400") for e in mean_days)
    # The table is one row per stage: merged on the stage label, which stays visible.
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    assert "stage" not in organize["options"]["excludeByName"]
    weighted = " ".join(t["expr"] for t in panels_by_title["Open pipeline"]["targets"])
    assert 'sum(kpi:pipeline_weighted{scope="team", team=~"$team"' in weighted
    legends = {t["legendFormat"] for t in panels_by_title["Open amount by stage"]["targets"]}
    assert legends == {"{{stage}}"}


def test_rep_dashboard_shows_the_reps_open_deals_by_stage_and_pace():
    d = load("rep.json")
    by_title = {p["title"]: p for p in data_panels(d)}
    (deals,) = by_title["My open deals by stage"]["targets"]
    assert deals["expr"] == ('kpi:pipeline_deals_by_stage{scope="rep", rep="$rep", '
                             'period="$period", offset="0"}')
    assert deals["legendFormat"] == "{{stage}}"
    (pace,) = by_title["Pace on my targets"]["targets"]
    assert pace["expr"].startswith("kpi:target_pace{") and 'rep="$rep"' in pace["expr"]
    steps = by_title["Pace on my targets"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["color"] for s in steps][-1] == "green" and steps[-1]["value"] == 1.0
    projection = " ".join(t["expr"] for t in by_title[
        "My targets: expected by now and projection"]["targets"])
    assert "kpi:target_expected{" in projection and "kpi:target_projection{" in projection


def test_wallboard_is_kiosk_friendly():
    d = load("wallboard.json")
    assert d["refresh"] == "30s"
    assert variables(d) == []
    assert d["timepicker"]["hidden"] is True
    kinds = [p["type"] for p in data_panels(d)]
    assert kinds.count("stat") >= 4 and "bargauge" in kinds and "gauge" in kinds
    slug = re.sub(r"[^a-z0-9]+", "-", d["title"].lower()).strip("-")
    kiosk = f"/d/kpi-wallboard/{slug}?orgId=1&kiosk"
    assert kiosk in (ROOT / "grafana" / "README.md").read_text()


# -- PromQL ---------------------------------------------------------------------------------


@pytest.mark.skipif(PROMTOOL is None,
                    reason="promtool is not installed (apt-get install prometheus)")
@pytest.mark.parametrize("name", FILES)
def test_every_expression_parses_with_promtool(name: str, tmp_path: Path):
    d = load(name)
    exprs = panel_exprs(d) + variable_exprs(d)
    assert exprs
    groups = [{"name": f"{name} {where}",
               "rules": [{"record": "grafana:check", "expr": substitute(expr)}]}
              for where, expr in exprs]
    rules = tmp_path / "exprs.yml"
    rules.write_text(json.dumps({"groups": groups}, indent=1))  # JSON is YAML
    proc = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", FILES)
def test_every_metric_named_is_recorded_and_documented(name: str):
    d = load(name)
    recorded, documented = recorded_names(), documented_names()
    for where, expr in panel_exprs(d):
        for info in ("kpi_rep_info", "kpi_team_info"):
            assert info not in expr or info in documented, f"{where}: {info} undocumented"
        names = metric_names(without_name_joins(expr)) - {"kpi:names"}
        assert names, f"{where}: reads no kpi metric: {expr}"
        raw = {n for n in names if not n.startswith("kpi:")}
        assert not raw, f"{where}: panels read recording rules only, not {raw}"
        assert names <= recorded, f"{where}: not a recording rule: {names - recorded}"
        assert names <= documented, f"{where}: not in docs/metrics.md: {names - documented}"
    for where, expr in variable_exprs(d):
        names = metric_names(expr)
        assert names and names <= documented, f"{where}: undocumented {names - documented}"


@pytest.mark.parametrize("name", FILES)
def test_every_selector_can_match_a_recorded_series(name: str):
    d = load(name)
    period_choices = {v["name"]: [o["value"] for o in v["options"]] for v in variables(d)
                      if v["name"] == "period"}.get("period", [])
    assert all(p in WINDOWS for p in period_choices)
    company_only = {"kpi:new_customers", "kpi:cac", "kpi:churn_rate", "kpi:retention_rate",
                    "kpi:arpa", "kpi:clv", "kpi:mrr_start", "kpi:mrr_new", "kpi:mrr_end",
                    "kpi:mrr_churned", "kpi:spend_total", "kpi:customers_active_start"}
    for where, expr in panel_exprs(d):
        for metric, m in selectors(expr):
            assert set(m) <= KPI_LABELS, f"{where}: unknown label in {metric}{m}"
            if metric == "kpi:target":
                assert "offset" not in m, f"{where}: kpi:target has no offset label"
            if metric in CURRENT_WINDOW_ONLY:
                assert m.get("offset") == ("=", "0"), f"{where}: {metric} exists for offset 0 only"
            if metric in ("kpi:target_coverage", "kpi:target_forecast_attainment"):
                assert m.get("kpi") == ("=", "revenue_won"), \
                    f"{where}: {metric} exists for revenue_won targets only"
            if not metric.startswith("kpi:") or metric in ("kpi:target", "kpi:events:rate5m"):
                continue
            op, period = m.get("period", ("=", None))
            periods = period_choices if period == "$period" else [period]
            if "offset" in m and period is not None:
                for p in periods:
                    assert m["offset"][1] in WINDOWS[p], f"{where}: {p} has no offset {m['offset']}"
            scope = m.get("scope", ("=", ""))[1]
            if metric in company_only:
                assert scope == "company", f"{where}: {metric} exists at company scope only"
            if metric in ("kpi:active_reps", "kpi:revenue_per_rep"):
                assert scope != "rep", f"{where}: {metric} has no rep scope"
            if metric == "kpi:clv":
                assert periods == ["month"], f"{where}: kpi:clv exists for months only"
            if metric == "kpi:revenue_growth":
                assert m["offset"][1] in ("0", "1"), where
            if metric == "kpi:revenue_growth_yoy":
                assert m["offset"][1] == "0" and set(periods) <= {"month", "quarter", "year"}, where
            if scope == "team":
                assert "rep" not in m, f"{where}: team-scope series have no rep label"
            if scope == "rep":
                assert "team" not in m, f"{where}: rep-scope series have no team label"


@pytest.mark.parametrize("name", FILES)
def test_no_panel_averages_or_sums_a_ratio(name: str):
    ratios = derived_names()
    assert {"kpi:win_rate", "kpi:churn_rate", "kpi:target_attainment"} <= ratios
    for where, expr in panel_exprs(load(name)):
        bare = without_strings(without_name_joins(expr))
        assert not re.search(r"\bavg(_over_time)?\s*(\(|by|without)", bare), \
            f"{where}: averages: {expr}"
        if metric_names(expr) & ratios:
            used = [a for a in AGGREGATIONS if re.search(rf"\b{a}\b\s*(\(|by\b|without\b)", bare)]
            assert not used, (f"{where}: aggregates a ratio with {used}; sum the components "
                              f"and divide instead: {expr}")


@pytest.mark.parametrize("name", FILES)
def test_reps_and_teams_are_shown_by_their_roster_names(name: str):
    """A legend names reps and teams by ``rep_name``/``team_name`` (never the bare id label),
    and every query that shows a name joins the info series and keeps unlisted ids."""
    for panel in load(name)["panels"]:
        for target in panel.get("targets", []):
            legend, expr = target.get("legendFormat", ""), target.get("expr", "")
            assert "{{rep}}" not in legend and "{{team}}" not in legend, (panel["title"], legend)
            for key in ("rep", "team"):
                if f"{{{{{key}_name}}}}" in legend or f"{key}_name" in json.dumps(
                        panel.get("transformations", [])) and f"group_left({key}_name)" in expr:
                    assert NAME_INFO[key] in expr and f"or ignoring({key}_name)" in expr, \
                        (panel["title"], expr)


def test_the_name_join_keeps_values_and_falls_back_to_the_id():
    expr = named('kpi:revenue_won{scope="rep"}', "rep")
    assert expr.startswith('(kpi:revenue_won{scope="rep"} * on(rep) group_left(rep_name) ')
    assert 'or ignoring(rep_name) label_replace(label_replace(kpi:revenue_won{scope="rep"}, ' \
           '"rep_name", "$1", "rep", "(.+)"), "__name__", "", "", "")' in expr
