"""Display names joined onto the KPIs in a real Prometheus (``grafana.promql.named``).

Two exporters, as in a deployment with two workers: the first serves the KPI components of
``tests/golden/small`` and the roster's ``kpi_rep_info``/``kpi_team_info``; the second serves
the roster only (another worker, or the gateway), so every info series exists twice and the
join must collapse the copies. The roster names some reps and teams and leaves others out:
those must still be shown, by their id. Debian's ``prometheus`` evaluates the project's
recording rules; the dashboards' own join (the string the generator writes) is queried.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

import grafana_variables
import prometheus_server
from engine.collector import KpiCollector
from engine.config import load_config
from engine.people.metrics import RosterCollector
from engine.people.roster import Person, Roster, load_roster
from engine.replay import replay_file
from engine.timestamps import parse_instant
from grafana.promql import name_option_regex, name_options, named, sel
from prometheus_server import Prometheus

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "golden" / "small"
RULES = ROOT / "prometheus" / "rules" / "kpi_recording.yml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(prometheus_server.BINARY is None, reason=prometheus_server.NOT_INSTALLED),
]

# rep-188, rep-zoë.müller and rep-012 are named; every other rep of the example is not in the roster.
# Team dach is named, the others are not.
ROSTER = """
[teams]
dach = "DACH Enterprise"

[[people]]
rep_id = "rep-188"
team_id = "dach"
name = "Anna Schmidt"

[[people]]
rep_id = "rep-zoë.müller"
team_id = "nordics"
name = "Zoë Müller"

[[people]]
rep_id = "rep-012"
team_id = "france"
name = 'Jean "JJ" {Dupont}"} 2'
"""
# rep-012's name holds what the dropdowns' regex splits lines on: quotes, braces, '"} '.
NAMED_REPS = {"rep-188": "Anna Schmidt", "rep-zoë.müller": "Zoë Müller",
              "rep-012": 'Jean "JJ" {Dupont}"} 2'}
NAMED_TEAMS = {"dach": "DACH Enterprise"}


def _exporter(registry: CollectorRegistry) -> tuple:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    return server, thread, f"127.0.0.1:{server.server_port}"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    config = load_config(EXAMPLE / "config.toml")
    as_of = parse_instant((EXAMPLE / "as_of.txt").read_text().strip())
    core = replay_file(EXAMPLE / "events.jsonl", config).core
    roster_file = tmp_path_factory.mktemp("roster") / "roster.toml"
    roster_file.write_text(ROSTER, encoding="utf-8")
    roster = load_roster(roster_file)
    worker = CollectorRegistry()
    KpiCollector(lambda: [core], core.calendar, config, clock=lambda: as_of, registry=worker)
    worker.register(RosterCollector(roster))
    other = CollectorRegistry()  # a second worker (or the gateway): the same roster again
    other.register(RosterCollector(roster))
    servers = [_exporter(worker), _exporter(other)]
    try:
        with Prometheus(tmp_path_factory.mktemp("prometheus"), [s[2] for s in servers], [RULES],
                        scrape_interval="3s") as prom:
            prom.wait_for("kpi:target_attainment")
            prom.wait_for('count(kpi_rep_info{rep="rep-188"}) == 2')
            time.sleep(1.5)
            yield prom
    finally:
        for server, thread, _ in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def _by(result: list[dict], *labels: str) -> dict[tuple, float]:
    return {tuple(r["metric"].get(label) for label in labels): float(r["value"][1])
            for r in result}


def test_every_rep_is_shown_with_its_name_or_its_id_and_the_same_value(prometheus) -> None:
    bare = sel("kpi:revenue_won", scope="rep", period="year", offset="0")
    plain = _by(prometheus.query(bare), "rep")
    assert len(plain) > 10 and {(rep,) for rep in NAMED_REPS} <= set(plain)
    joined = prometheus.query(named(bare, "rep"))
    assert len(joined) == len(plain)  # nobody lost, nobody doubled by the two info copies
    for r in joined:
        rep = r["metric"]["rep"]
        assert r["metric"]["rep_name"] == NAMED_REPS.get(rep, rep)
        assert float(r["value"][1]) == plain[(rep,)]
        assert "__name__" not in r["metric"]  # named and unnamed rows look alike in tables


def test_teams_are_named_and_the_company_series_passes_through(prometheus) -> None:
    expr = 'kpi:deals_won{scope=~"company|team", period="month", offset="0"}'
    plain = _by(prometheus.query(expr), "scope", "team")
    joined = prometheus.query(named(expr, "team"))
    assert len(joined) == len(plain) and ("company", None) in plain
    for r in joined:
        team = r["metric"].get("team")
        assert r["metric"].get("team_name") == (NAMED_TEAMS.get(team, team) if team else None)
        assert float(r["value"][1]) == plain[(r["metric"]["scope"], team)]


def test_the_dashboards_rep_and_team_queries_show_names(prometheus) -> None:
    """The committed dashboards' own queries, as Grafana sends them (variables set to All)."""
    import json
    import re

    found = 0
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                if "kpi_rep_info" not in expr and "kpi_team_info" not in expr:
                    continue
                expr = re.sub(r"\$(team|rep)\b", ".*", expr).replace("$period", "month")
                result = prometheus.query(expr)
                kpi = re.search(r"kpi:[a-z_]+\{[^}]*\}", expr).group(0)
                shown = {(r["metric"].get("rep"), r["metric"].get("team")) for r in result}
                bare = {(r["metric"].get("rep"), r["metric"].get("team"))
                        for r in prometheus.query(kpi)}
                want = min(len(bare), 10) if expr.startswith("topk(10,") else len(bare)
                assert len(shown) == want, (path.name, panel["title"], expr)
                if not result:  # e.g. no team targets in the example: nothing to name
                    continue
                key = "rep" if "kpi_rep_info" in expr else "team"
                names = {r["metric"].get(f"{key}_name") for r in result}
                ids = {r["metric"].get(key) for r in result} - {None}
                wanted = NAMED_REPS if key == "rep" else NAMED_TEAMS
                assert {wanted[i] for i in ids if i in wanted} <= names, (panel["title"], names)
                assert ids - set(wanted) <= names, (panel["title"], "unlisted ids shown by id")
                found += 1
    assert found >= 10


# The dropdowns, and the ids each must offer (read here from the bare KPI series).
DROPDOWNS = [
    ("rep.json", "rep", 'kpi:activities{scope="rep"}'),
    ("sales-manager.json", "team", 'kpi:leads_created{scope="team"}'),
    ("sales-manager.json", "rep", "kpi_rep_contributions"),
]


def _variable(name: str, key: str) -> dict:
    dashboard = json.loads((ROOT / "grafana" / "dashboards" / name).read_text(encoding="utf-8"))
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == key]
    return variable


@pytest.mark.parametrize(("name", "key", "ids_of"), DROPDOWNS)
def test_the_dropdowns_show_names_and_keep_ids_as_values(prometheus, name: str, key: str,
                                                         ids_of: str) -> None:
    """The committed variable's query run in Prometheus and its regex applied as Grafana does
    (JavaScript, in node when installed): one option per id, its text the roster name or, for
    an id the roster does not list, the id; its value always the id."""
    variable = _variable(name, key)
    query = variable["query"].replace("$team", ".*")  # the team dropdown set to All (".*")
    options = grafana_variables.variable_options(prometheus, variable, query)
    ids = set(prometheus.label_values(ids_of, key))
    wanted = NAMED_REPS if key == "rep" else NAMED_TEAMS
    assert ids & set(wanted) and ids - set(wanted), "the example must have named and unnamed"
    assert sorted(value for _, value in options) == sorted(ids)  # each id once, none lost
    for text, value in options:
        assert text == wanted.get(value, value), (text, value)


def test_the_rep_dropdown_follows_the_chosen_teams(prometheus) -> None:
    """``$team`` narrows the reps, as Grafana substitutes a multi-value choice: ``(a|b)``."""
    variable = _variable("sales-manager.json", "rep")
    options = grafana_variables.variable_options(
        prometheus, variable, variable["query"].replace("$team", "(dach|france)"))
    ids = set(prometheus.label_values('kpi_rep_contributions{team=~"dach|france"}', "rep"))
    assert ids < set(prometheus.label_values("kpi_rep_contributions", "rep"))
    assert {value for _, value in options} == ids
    assert ("Anna Schmidt", "rep-188") in options and ("rep-016", "rep-016") in options


@pytest.mark.skipif(grafana_variables.NODE is None, reason="node is not installed")
def test_the_python_reading_of_the_regex_agrees_with_javascript(prometheus) -> None:
    """Where node is missing the tests read the regex in Python; both must give one answer."""
    variable = _variable("sales-manager.json", "rep")
    m = re.fullmatch(r"query_result\((.+)\)", variable["query"].replace("$team", ".*"),
                     flags=re.DOTALL)
    result = prometheus.query(m.group(1))
    assert len(result) > 10
    assert (sorted(grafana_variables.options_with_node(variable["regex"], result))
            == sorted(grafana_variables.options_with_python(variable["regex"], result)))


def test_a_renamed_rep_exported_under_two_names_still_joins(tmp_path: Path) -> None:
    """A rolling restart with a new roster: one exporter says "Anna Schmidt", the other
    "Anna Weber". A bare group_left would fail (many-to-many); the dashboards' join shows the
    rep once, under one of the two names."""
    old, new = Roster(), Roster()
    old.name(Person("rep-1", "dach", "Anna Schmidt"))
    new.name(Person("rep-1", "dach", "Anna Weber"))
    registries = [CollectorRegistry(), CollectorRegistry()]
    registries[0].register(RosterCollector(old))
    registries[1].register(RosterCollector(new))
    servers = [_exporter(r) for r in registries]
    try:
        with Prometheus(tmp_path, [s[2] for s in servers], [], scrape_interval="1s") as prom:
            prom.wait_for('count(kpi_rep_info{rep="rep-1"}) == 2')
            # kpi_rep_info itself stands in for a KPI series carrying the rep label.
            kpi = 'label_replace(vector(42), "rep", "rep-1", "", "")'
            result = prom.query(named(kpi, "rep"))
            assert len(result) == 1
            assert result[0]["metric"]["rep_name"] in ("Anna Schmidt", "Anna Weber")
            assert float(result[0]["value"][1]) == 42
            # The dropdown offers her once, under one of the two names.
            options = grafana_variables.variable_options(
                prom, {"name": "rep", "regex": name_option_regex("rep")},
                f"query_result({name_options(kpi, 'rep')})")
            assert len(options) == 1 and options[0][1] == "rep-1"
            assert options[0][0] in ("Anna Schmidt", "Anna Weber")
    finally:
        for server, thread, _ in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
