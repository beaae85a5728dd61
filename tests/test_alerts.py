"""The alerting rules and their routing: valid, unit-tested both ways, routed, documented.

``promtool`` comes with Debian's ``prometheus`` package and ``amtool`` with
``prometheus-alertmanager``; the tests that run them skip on a machine without them, the
structural checks run everywhere. YAML is read with ``ruamel.yaml`` (a dependency of
``check-jsonschema``, in the ``test`` extra).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).parent.parent
ALERT_RULE_FILES = sorted((ROOT / "prometheus" / "alerts").glob("*.yml"))
ALERT_TEST_FILES = sorted((ROOT / "prometheus" / "tests").glob("alerts_*_test.yml"))
ALERTMANAGER_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
ALERTS_DOC = ROOT / "docs" / "alerts.md"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")

#: Who acts on an alert (label ``audience``) and where Alertmanager sends it, by severity.
RECEIVERS = {
    ("oncall", "critical"): "oncall-page",
    ("oncall", "warning"): "oncall",
    ("sales-managers", "critical"): "sales-managers",
    ("sales-managers", "warning"): "sales-managers",
}
SEVERITIES = {"critical", "warning"}

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool is not installed (apt-get install prometheus-alertmanager)")


def _yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def _rules(kind: str) -> list[dict]:
    """Every rule of ``kind`` ("alert" or "record") in prometheus/alerts/*.yml."""
    return [rule for path in ALERT_RULE_FILES for group in _yaml(path)["groups"]
            for rule in group["rules"] if kind in rule]


def _alerts() -> dict[str, dict]:
    alerts: dict[str, dict] = {}
    for rule in _rules("alert"):
        assert rule["alert"] not in alerts, f"alert {rule['alert']} is defined twice"
        alerts[rule["alert"]] = rule
    return alerts


def _alert_test_cases() -> list[tuple[str, str, bool]]:
    """(test file, alertname, fires) for every ``alert_rule_test`` entry."""
    cases = []
    for path in ALERT_TEST_FILES:
        for group in _yaml(path)["tests"]:
            for case in group.get("alert_rule_test") or []:
                cases.append((path.name, case["alertname"], bool(case.get("exp_alerts"))))
    return cases


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_there_are_alert_rules_and_alert_tests():
    assert ALERT_RULE_FILES and ALERT_TEST_FILES
    assert _alerts()


@needs_promtool
@pytest.mark.parametrize("path", ALERT_RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path):
    proc = _run(PROMTOOL, "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
@pytest.mark.parametrize("path", ALERT_TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path):
    proc = _run(PROMTOOL, "test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_test_case():
    cases = _alert_test_cases()
    firing = {name for _, name, fires in cases if fires}
    quiet = {name for _, name, fires in cases if not fires}
    alerts = set(_alerts())
    assert not alerts - firing, f"alerts never shown firing: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"alerts never shown staying quiet: {sorted(alerts - quiet)}"


def test_every_alert_test_names_an_existing_alert():
    """A quiet test of a misspelt alert name would pass without testing anything."""
    alerts = set(_alerts())
    unknown = sorted({(file, name) for file, name, _ in _alert_test_cases() if name not in alerts})
    assert not unknown, f"alert_rule_test entries for alerts that do not exist: {unknown}"


def test_every_alert_rule_file_is_loaded_by_an_alert_test():
    loaded = {(path.parent / rule_file).resolve()
              for path in ALERT_TEST_FILES for rule_file in _yaml(path)["rule_files"]}
    assert not [p.name for p in ALERT_RULE_FILES if p.resolve() not in loaded]


@pytest.mark.parametrize("name", sorted(_alerts()))
def test_every_alert_has_severity_audience_and_annotations_with_values(name: str):
    rule = _alerts()[name]
    labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES
    assert (labels.get("audience"), labels["severity"]) in RECEIVERS
    assert annotations.get("summary") and annotations.get("description")
    values = r"\$value|\bquery\b|\$labels\."
    assert re.search(values, annotations["summary"] + annotations["description"]), \
        "the annotations should say which value, team or instance the alert is about"
    assert re.search(r"\$value|\bquery\b", annotations["description"]), \
        "the description should quote the value that fired"


def test_alertmanager_config_routes_every_audience_and_inhibits_kpi_alerts_on_engine_failure():
    config = _yaml(ALERTMANAGER_CONFIG)
    receivers = {r["name"] for r in config["receivers"]}
    route = config["route"]

    def walk(node: dict) -> list[dict]:
        return [node] + [r for child in node.get("routes", []) for r in walk(child)]

    routes = walk(route)
    assert all(r.get("receiver", route["receiver"]) in receivers for r in routes)
    matchers = {m for r in routes for m in r.get("matchers", [])}
    for audience in {a for a, _ in RECEIVERS}:
        assert f'audience="{audience}"' in matchers
    assert {"alertname", "instance"} <= set(route["group_by"])
    inhibits = [(set(r["source_matchers"]), set(r["target_matchers"]))
                for r in config["inhibit_rules"]]
    assert ({'audience="oncall"', 'severity="critical"'}, {'audience="sales-managers"'}) in inhibits


@needs_amtool
def test_amtool_accepts_the_alertmanager_config():
    proc = _run(AMTOOL, "check-config", str(ALERTMANAGER_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_amtool
@pytest.mark.parametrize("name", sorted(_alerts()))
def test_each_alert_reaches_the_receiver_of_its_audience_and_severity(name: str):
    labels = {"alertname": name, **_alerts()[name]["labels"]}
    if labels["audience"] == "sales-managers":
        labels.update(scope="team", team="emea")
    proc = _run(AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                *[f"{key}={value}" for key, value in labels.items()])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == [RECEIVERS[labels["audience"], labels["severity"]]]


def test_docs_describe_every_alert_and_every_series_the_alert_files_record():
    doc = ALERTS_DOC.read_text(encoding="utf-8")
    names = sorted(_alerts()) + sorted(rule["record"] for rule in _rules("record"))
    missing = [name for name in names if f"`{name}`" not in doc]
    assert not missing, f"not in docs/alerts.md: {missing}"
