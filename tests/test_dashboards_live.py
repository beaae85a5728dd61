"""The Grafana dashboards and the recording rules against a live stack.

A real ``kpi-engine worker`` reads generated history (400 days, fixed seed, so year-over-year
panels have data) from the real Kafka broker; Debian's ``prometheus`` scrapes its ``/metrics``
with the project's recording rules. Then:

1. every panel query of ``grafana/dashboards/*.json``, with its template variables set to real
   values (variables of type ``query`` resolved through Prometheus like Grafana does, every
   ``period`` choice), is a successful instant query with a non-empty result;
2. the ``kpi:*`` rules equal ``GET /api/kpis`` at the instant of one rule evaluation, for every
   report window, at company, team and rep scope.

After the history, a 6-second burst of live events (``generate --rate``, stamped now) gives
"today" deals and closes also on a weekend, when the history has none, and a small v2 pipeline
(``tests/pipeline_traffic.py``: deals of every rep moved through the configured stages in the
last six hours, some closed) gives the pipeline, stage-flow, forecast and pacing panels data in
every current window. The worker's time zone is chosen so that it is about 20:00 locally: no
window rolls over during the test. The worker has a people roster that names some reps and one
team and leaves the others out, so the panels' name joins are checked with both: every query
still has data, listed reps and teams carry their names and the others their ids.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine.kafka_local import free_port
from grafana_variables import variable_options
from pipeline_traffic import pipeline_events, stages_toml, write_events
from prometheus_server import Prometheus, require_binary
from test_grafana_dashboards import SUBSTITUTIONS, load, panel_exprs, variables
from test_wallboard_browser import Worker, sent_count

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
WAIT_SECONDS = 240.0
DAYS, TEAMS, REPS_PER_TEAM = 400, 3, 4
PERIODS = ("day", "week", "month", "quarter", "year")
# Far above what any scope wins, so that no target is reached: coverage (due pipeline over
# what is left to the target) is null once a target is reached, and its panels need a value.
TARGET_VALUES = {"day": 5_000_000, "week": 30_000_000, "month": 120_000_000,
                 "quarter": 360_000_000, "year": 1_400_000_000}
# The roster: half the reps and one team named, the rest shown by id.
ROSTER_REPS = {"rep-001": "Anna Schmidt", "rep-002": "Jonas Weber", "rep-005": "Søren Ødegaard",
               "rep-006": "Élodie Martin", "rep-009": "Pieter de Vries", "rep-010": "Maja Lind"}
ROSTER_TEAMS = {"dach": "DACH Region"}
# The as_of of each rule evaluation, recorded in the KPI group itself (appended to a copy of
# the rules), so that a comparison reads the KPIs and their instant from ONE evaluation.
AS_OF_RULE = "test:kpi_as_of_timestamp_seconds"
COMPARED = ("revenue_won", "deals_won", "win_rate", "lead_conversion_rate", "avg_deal_size",
            "sales_velocity", "revenue_growth", "active_reps", "cac", "churn_rate", "arpa")
# v2 (SPEC §7.4): the open pipeline and the forecast, recorded for offset-0 windows only.
CURRENT_ONLY = ("pipeline_deals", "pipeline_amount", "pipeline_weighted", "pipeline_due_amount",
                "pipeline_due_weighted", "forecast_commit", "forecast_best_case",
                "forecast_weighted")
# Keyed KPIs: rule -> (report KPI, label, offset-0 only).
KEYED = {"pipeline_deals_by_stage": ("pipeline_deals_by_stage", "stage", True),
         "pipeline_amount_by_stage": ("pipeline_amount_by_stage", "stage", True),
         "pipeline_amount_by_category": ("pipeline_amount_by_category", "category", True),
         "stage_entries": ("stage_entries", "stage", False),
         "avg_days_in_stage": ("avg_days_in_stage", "stage", False)}
# SPEC §7.5 on targets (offset-0 windows): rule -> field of the report's targets[kpi].
PACING = {"target_expected": "expected", "target_pace": "pace",
          "target_projection": "projection", "target_coverage": "coverage",
          "target_forecast_attainment": "forecast_attainment"}
COMPANY_ONLY = {"cac", "churn_rate", "arpa"}
NO_REP_SCOPE = {"active_reps"}
# Panel queries that cannot have data here: (dashboard, where-prefix) -> reason. Keep it short.
EXEMPT: dict[tuple[str, str], str] = {}


def local_zone_at_20h() -> str:
    """An ``Etc/GMT±N`` zone in which it is about 20:00 now."""
    hours = (20 - datetime.now(timezone.utc).hour) % 24
    if hours > 14:
        hours -= 24
    return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"  # Etc/GMT-5 is UTC+5


def rules_with_as_of(workdir: Path) -> list[Path]:
    """Copies of the project's rule files in ``workdir``, with :data:`AS_OF_RULE` recorded in
    the KPI group of ``kpi_recording.yml``."""
    rules = []
    for path in RULE_FILES:
        text = path.read_text()
        if path.name == "kpi_recording.yml":
            marker = re.search(r"^  - name: kpi_processing$", text, flags=re.M)
            assert marker, "kpi_recording.yml: group kpi_processing not found"
            text = (text[:marker.start()] + f"      - record: {AS_OF_RULE}\n"
                    "        expr: max(kpi_as_of_timestamp_seconds)\n" + text[marker.start():])
        copy = workdir / path.name
        copy.write_text(text)
        rules.append(copy)
    return rules


def until(what: str, condition, timeout: float = WAIT_SECONDS, *procs) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.process.poll() is None, f"{type(proc).__name__} exited waiting for {what}"
        try:
            value = condition()
            if value:
                return value
        except (OSError, AssertionError, KeyError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


@pytest.fixture(scope="module")
def stack(kafka_broker, tmp_path_factory, web_access) -> Iterator[dict]:
    require_binary()
    workdir = tmp_path_factory.mktemp("dashboards-live")
    token = uuid.uuid4().hex[:8]
    port = free_port()
    config_path = workdir / "worker.toml"
    roster = workdir / "roster.toml"
    roster.write_text("".join(
        [f'[teams]\n{team} = "{name}"\n' for team, name in ROSTER_TEAMS.items()]
        + [f'[[people]]\nrep_id = "{rep}"\nteam_id = "dach"\nname = "{name}"\n'
           for rep, name in ROSTER_REPS.items()]), encoding="utf-8")

    def write_config(targets: str) -> None:
        config_path.write_text(f"""
[people]
roster = "{roster}"
[calendar]
timezone = "{local_zone_at_20h()}"
[money]
currency = "EUR"
gross_margin = 0.7
[kafka]
bootstrap_servers = "{kafka_broker.bootstrap}"
[topics]
input = "dashboards-in-{token}"
dead_letter = "dashboards-dlq-{token}"
partitions = 3
[worker]
app_id = "dashboards-{token}"
data_dir = "{workdir / 'data'}"
web_host = "127.0.0.1"
web_port = {port}
{stages_toml()}
{targets}
{web_access.config_toml()}""")

    # Revenue targets for every period at company scope, for every team and for every rep, so
    # that the target panels have data whichever team and rep a dashboard shows.
    history = workdir / "history.jsonl"
    write_config("")
    gen = subprocess.run(
        [sys.executable, "-m", "engine.cli", "generate", "--config", str(config_path),
         "--teams", str(TEAMS), "--reps-per-team", str(REPS_PER_TEAM), "--days", str(DAYS),
         "--seed", "7", "--out", str(history)], capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    teams, reps = set(), set()
    for line in history.open():
        event = json.loads(line)
        teams.update([event["team_id"]] if event.get("team_id") else [])
        reps.update([event["rep_id"]] if event.get("rep_id") else [])
    targets = []
    for period, value in TARGET_VALUES.items():
        for scope in [""] + [f'team = "{t}"\n' for t in sorted(teams)] \
                + [f'rep = "{r}"\n' for r in sorted(reps)]:
            targets.append(f'[[targets]]\nkpi = "revenue_won"\nperiod = "{period}"\n'
                           f"value = {value}\n{scope}")
    write_config("\n".join(targets))

    worker = Worker(config_path, workdir / "worker.log", port, web_access)
    prometheus = None
    try:
        worker.until(lambda: worker.get_json("/ready")["ready"], "the worker to be ready")
        send = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "generate", "--config", str(config_path),
             "--teams", str(TEAMS), "--reps-per-team", str(REPS_PER_TEAM), "--days", str(DAYS),
             "--seed", "7", "--kafka"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sent = sent_count(send)
        # A burst of live events stamped now: the history has no deals on weekend days, and
        # the day panels' ratios need closes today.
        live = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "generate", "--config", str(config_path),
             "--teams", str(TEAMS), "--reps-per-team", str(REPS_PER_TEAM), "--rate", "400",
             "--duration", "6", "--seed", "8", "--id-prefix", "live-", "--kafka"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sent += sent_count(live)
        pairs = sorted({(e["team_id"], e["rep_id"]) for e in map(json.loads, history.open())
                        if e.get("team_id") and e.get("rep_id")})
        pipeline = write_events(workdir / "pipeline.jsonl",
                                pipeline_events(pairs, datetime.now(timezone.utc)))
        sent += sent_count(subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "produce", str(pipeline), "--config",
             str(config_path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT))
        until("every event to be counted", lambda: worker.counted() == sent, WAIT_SECONDS,
              worker)
        events = worker.get_json("/api/kpis")["events"]
        assert events["invalid"] == 0 and events["duplicate"] == 0, events
        worker.web.assert_enforced(worker.base)
        prometheus = Prometheus(workdir, [worker.base.split("://", 1)[1]],
                                rules_with_as_of(workdir), scrape_interval="2s",
                                ready_timeout=WAIT_SECONDS, scrape=worker.web.scrape_config())
        until("the kpi:* rules to have samples",
              lambda: prometheus.query("kpi:revenue_won") and prometheus.query(AS_OF_RULE)
              and prometheus.query("kpi:target_attainment")
              and prometheus.query("kpi:forecast_weighted")
              and prometheus.query("kpi:avg_days_in_stage"), WAIT_SECONDS, worker, prometheus)
        yield {"worker": worker, "prometheus": prometheus, "teams": sorted(teams),
               "reps": sorted(reps)}
    finally:
        if prometheus is not None:
            prometheus.stop()
        worker.stop()
        assert prometheus is None or prometheus.process.poll() is not None
        assert worker.process.poll() is not None


# -- 1. every panel query has data -----------------------------------------------------------

def substitute(expr: str, values: dict[str, str]) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name.isdigit():  # a label_replace capture group
            return m.group(0)
        assert name in values, f"unknown template variable ${name} in {expr}"
        return values[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def choose(prometheus: Prometheus, dashboard: dict, exprs: list[tuple[str, str]],
           base: dict[str, str]) -> dict[str, str]:
    """Grafana's choice of the query variables, in order: for a single-value variable the
    first value with which every panel query using it has data, for a multi-value one all.
    The rep and team dropdowns show the roster's names, or the id where there is none."""
    values = dict(base)
    for var in variables(dashboard):
        if var["type"] != "query":
            continue
        name = var["name"]
        shown = variable_options(prometheus, var, substitute(var["query"], values))
        assert shown, f"variable {name}: no values"
        wanted = {"rep": ROSTER_REPS, "team": ROSTER_TEAMS}.get(name, {})
        misnamed = [(text, value) for text, value in shown if text != wanted.get(value, value)]
        assert not misnamed, f"variable {name}: options misnamed: {misnamed}"
        options = [value for _, value in shown]
        if var.get("multi"):
            values[name] = "(" + "|".join(options) + ")"
            continue
        uses = [e for _, e in exprs if f"${name}" in e or "${" + name in e]
        later = {v["name"] for v in variables(dashboard)} - set(values) - {name}
        for option in options:
            trial = {**values, name: option, **{v: ".*" for v in later}}
            if all(prometheus.query(substitute(e, trial)) for e in uses):
                values[name] = option
                break
        else:
            values[name] = options[0]
    return values


def test_every_panel_query_returns_data(stack: dict) -> None:
    prometheus = stack["prometheus"]
    # Rates over the processing counters need two scrapes in their 5m range.
    until("two scrapes for the rate rules",
          lambda: prometheus.query('kpi:events:rate5m{type="activity.logged"}'), 60,
          prometheus)
    problems, checked, exempted, named_ids = [], 0, set(), 0
    for path in DASHBOARDS:
        dashboard = load(path.name)
        exprs = panel_exprs(dashboard)
        periods = [o["value"] for v in variables(dashboard) if v["name"] == "period"
                   for o in v["options"]] or [None]
        for period in periods:
            base = {**SUBSTITUTIONS, **({"period": period} if period else {})}
            values = choose(prometheus, dashboard, exprs, base)
            for where, expr in exprs:
                key = next((k for k in EXEMPT if k[0] == path.name and where.startswith(k[1])),
                           None)
                promql = substitute(expr, values)
                result = prometheus.query(promql)  # asserts status "success"
                checked += 1
                for key_label in ("rep", "team"):
                    if f"kpi_{key_label}_info" not in expr:
                        continue
                    named_ids += 1
                    wanted = ROSTER_REPS if key_label == "rep" else ROSTER_TEAMS
                    for series in result:
                        labels = series["metric"]
                        if labels.get(key_label) is not None and labels.get(
                                f"{key_label}_name") != wanted.get(labels[key_label],
                                                                   labels[key_label]):
                            problems.append(f"{path.name} {where}: {labels} is misnamed")
                if key:
                    exempted.add(key)
                elif not result:
                    problems.append(f"{path.name} {where} (period={period}, "
                                    f"{ {k: values[k] for k in ('team', 'rep') if k in values} }):"
                                    f" no data: {promql}")
    print(f"checked {checked} panel queries")
    assert checked > 100 and named_ids > 10
    assert not problems, "\n".join(problems)
    assert exempted == set(EXEMPT), "an exemption matched nothing"


# -- 2. the recording rules equal the report ---------------------------------------------------

def rfc3339(seconds: float) -> str:
    micros = round(seconds * 1e6)
    instant = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)
    return instant.isoformat().replace("+00:00", "Z")


def series_key(labels: dict) -> tuple:
    return (labels["period"], int(labels["offset"]), labels["scope"], labels.get("team", ""),
            labels.get("rep", ""))


def test_recording_rules_equal_the_report(stack: dict) -> None:
    worker, prometheus = stack["worker"], stack["prometheus"]
    compared = non_null = 0
    for _ in range(2):  # two different evaluations
        # The latest evaluation of the KPI group: its timestamp and the as_of it read.
        samples = prometheus.query(f"{AS_OF_RULE}[30s]")[0]["values"]
        at, as_of = float(samples[-1][0]), float(samples[-1][1])
        assert prometheus.query(AS_OF_RULE, at)[0]["value"] == [at, samples[-1][1]]
        scraped = prometheus.query("kpi_as_of_timestamp_seconds[30s]", at)[0]["values"]
        assert as_of in [float(v) for _, v in scraped], "as_of is not one of the scrapes"
        report = worker.get_json("/api/kpis", as_of=rfc3339(as_of))
        assert abs(datetime.fromisoformat(report["as_of"]).timestamp() - as_of) < 1e-6
        recorded = {}
        for kpi in COMPARED:
            recorded[kpi] = {series_key(s["metric"]): float(s["value"][1])
                             for s in prometheus.query(f"kpi:{kpi}", at)}
            assert all(s["value"][0] == at for s in prometheus.query(f"kpi:{kpi}", at))
        team = stack["teams"][0]
        rep = max(stack["reps"], key=lambda r: sum(
            w["reps"].get(r, {"kpis": {"deals_won": 0}})["kpis"]["deals_won"]
            for w in report["windows"]))
        problems = []
        for window in report["windows"]:
            period, offset = window["period"], window["offset"]
            scopes = [("company", "", "", window["company"]["kpis"]),
                      ("team", team, "", window["teams"][team]["kpis"]),
                      ("rep", "", rep, window["reps"][rep]["kpis"])]
            for scope, t, r, kpis in scopes:
                for kpi in COMPARED:
                    if scope != "company" and kpi in COMPANY_ONLY:
                        continue
                    if scope == "rep" and kpi in NO_REP_SCOPE:
                        continue
                    want = kpis.get(kpi)
                    got = recorded[kpi].get((period, offset, scope, t, r))
                    compared += 1
                    non_null += want is not None
                    if want is None:
                        if got is not None:
                            problems.append(f"{kpi} {period}/{offset} {scope} {t}{r}: report "
                                            f"null, Prometheus {got}")
                    elif got is None or not math.isclose(got, want, rel_tol=1e-6,
                                                         abs_tol=1e-9):
                        problems.append(f"{kpi} {period}/{offset} {scope} {t}{r}: report "
                                        f"{want}, Prometheus {got}")
        assert not problems, f"as_of {rfc3339(as_of)}:\n" + "\n".join(problems)
        time.sleep(3)
    print(f"compared {compared} values, {non_null} non-null")
    assert compared > 300 and non_null > 250, (compared, non_null)


def latest_evaluation(prometheus: Prometheus) -> tuple[float, float]:
    """(evaluation time, as_of it read) of the latest evaluation of the KPI group."""
    samples = prometheus.query(f"{AS_OF_RULE}[30s]")[0]["values"]
    return float(samples[-1][0]), float(samples[-1][1])


def test_pipeline_and_pacing_rules_equal_the_report(stack: dict) -> None:
    """The v2 rules (SPEC §7.4 pipeline, stage flows and forecast; §7.5 pacing) equal
    ``/api/kpis`` at the as_of of one rule evaluation, for company, a team and a rep."""
    worker, prometheus = stack["worker"], stack["prometheus"]
    at, as_of = latest_evaluation(prometheus)
    report = worker.get_json("/api/kpis", as_of=rfc3339(as_of))
    team = stack["teams"][0]
    month = next(w for w in report["windows"] if w["period"] == "month" and w["offset"] == 0)
    rep = max(month["reps"], key=lambda r: month["reps"][r]["kpis"]["pipeline_deals"])

    def recorded(rule: str, *extra: str) -> dict[tuple, float]:
        samples = prometheus.query(f"kpi:{rule}", at)
        assert all(s["value"][0] == at for s in samples)
        return {series_key(s["metric"]) + tuple(s["metric"].get(x, "") for x in extra):
                float(s["value"][1]) for s in samples}

    problems: list[str] = []
    counts = {"compared": 0, "non_null": 0}

    def compare(what: str, want: Any, got: float | None) -> None:
        counts["compared"] += 1
        counts["non_null"] += want is not None
        if want is None:
            if got is not None:
                problems.append(f"{what}: report null, Prometheus {got}")
        elif got is None or not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            problems.append(f"{what}: report {want}, Prometheus {got}")

    scalars = {kpi: recorded(kpi) for kpi in CURRENT_ONLY}
    keyed = {rule: recorded(rule, label) for rule, (_, label, _) in KEYED.items()}
    pacing = {rule: recorded(rule, "kpi") for rule in PACING}
    for window in report["windows"]:
        period, offset = window["period"], window["offset"]
        for scope, t, r, doc in (("company", "", "", window["company"]),
                                 ("team", team, "", window["teams"][team]),
                                 ("rep", "", rep, window["reps"][rep])):
            key = (period, offset, scope, t, r)
            where = f"{period}/{offset} {scope} {t}{r}"
            if offset == 0:
                for kpi in CURRENT_ONLY:
                    compare(f"{kpi} {where}", doc["kpis"][kpi], scalars[kpi].get(key))
                for rule, field in PACING.items():
                    for kpi, entry in doc["targets"].items():
                        compare(f"{rule}{{kpi={kpi}}} {where}", entry[field],
                                pacing[rule].get(key + (kpi,)))
            for rule, (kpi, label, current_only) in KEYED.items():
                if current_only and offset != 0:
                    continue
                for name, want in doc["kpis"][kpi].items():
                    compare(f"{rule}{{{label}={name}}} {where}", want,
                            keyed[rule].get(key + (name,)))
    assert not problems, f"as_of {rfc3339(as_of)}:\n" + "\n".join(problems)
    print(f"compared {counts['compared']} v2 values, {counts['non_null']} non-null")
    # The pipeline is alive: deals open in several stages, stays that ended today, a forecast
    # above what is won, pace on every revenue target.
    company = month["company"]
    assert sum(v > 0 for v in company["kpis"]["pipeline_deals_by_stage"].values()) >= 3
    day = next(w for w in report["windows"] if w["period"] == "day" and w["offset"] == 0)
    assert any(v is not None for v in day["company"]["kpis"]["avg_days_in_stage"].values())
    assert company["kpis"]["forecast_best_case"] > company["kpis"]["revenue_won"]
    assert company["targets"]["revenue_won"]["pace"] is not None
    assert counts["compared"] > 300 and counts["non_null"] > 250, counts
