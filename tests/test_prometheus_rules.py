"""The recording rules: valid for promtool, proven by its unit tests, and complete.

``promtool`` comes with the Debian ``prometheus`` package (``apt-get install prometheus``);
CI installs it, so these tests only skip on a machine without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.components import UNITS
from engine.catalog import TARGETABLE_KPIS

ROOT = Path(__file__).parent.parent
RULE_FILES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
TEST_FILES = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))
RECORDING = ROOT / "prometheus" / "rules" / "kpi_recording.yml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def _recorded_names() -> list[str]:
    return re.findall(r"^\s*- record:\s*(\S+)\s*$", RECORDING.read_text(), flags=re.M)


def test_there_are_rule_and_test_files():
    assert RECORDING in RULE_FILES
    assert TEST_FILES


@needs_promtool
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path):
    proc = _promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path):
    proc = _promtool("test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_recording_rule_has_a_unit_test_expectation():
    expected = "\n".join(p.read_text() for p in TEST_FILES)
    untested = [name for name in set(_recorded_names())
                if not re.search(r"labels:\s*'" + re.escape(name) + r"[{']", expected)]
    assert not untested, f"recording rules without an expected sample: {sorted(untested)}"


def test_every_kpi_of_the_report_has_a_recording_rule():
    recorded = set(_recorded_names())
    missing = [kpi for kpi in TARGETABLE_KPIS if f"kpi:{kpi}" not in recorded]
    assert not missing
    assert "kpi:activities_by_type" in recorded and "kpi:target_attainment" in recorded


def test_target_attainment_covers_exactly_the_targetable_kpis():
    match = re.search(r'__name__=~"kpi:\(([^)]*)\)"', RECORDING.read_text())
    assert match, "kpi:target_attainment selects the KPIs by name"
    assert sorted(match.group(1).split("|")) == sorted(TARGETABLE_KPIS)


def test_every_exported_component_is_used_by_a_rule():
    rules = RECORDING.read_text()
    unused = [name for name in UNITS if not re.search(rf"\bkpi_{name}\b", rules)]
    assert not unused
