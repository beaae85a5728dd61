"""Golden tests: the spec's public examples give exactly the report two independent
implementations of the contract produced (``expected.json``), number by number.

``small`` is the v1 example: its expected report predates SPEC §7, so the §7 additions (the
pipeline KPIs and the pacing fields of targets) are taken out of our report before comparing;
every v1 value must be unchanged. ``pipeline`` is the v2 example, compared whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reportdiff import diff_reports, without_v2

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "spec" / "examples"
EXAMPLES = [HERE / "golden" / name for name in ("small", "pipeline")] + [
    SHARED / name for name in ("small", "pipeline") if (SHARED / name).is_dir()]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_report_on_spec_example_matches_expected(example: Path, tmp_path: Path):
    out = tmp_path / "report.json"
    as_of = (example / "as_of.txt").read_text().strip()
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "report", "--events", str(example / "events.jsonl"),
         "--as-of", as_of, "--config", str(example / "config.toml"), "--format", "json",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    actual = json.loads(out.read_text())
    expected = json.loads((example / "expected.json").read_text())
    if example.name == "small":
        assert "pipeline_deals" not in expected["windows"][0]["company"]["kpis"]
        actual = without_v2(actual)
    differences = diff_reports(actual, expected)
    assert not differences, "\n".join(differences[:50])


def test_reportdiff_catches_a_changed_number_and_a_null():
    expected = {"a": [{"x": 1.0, "n": 3, "z": None}]}
    assert diff_reports({"a": [{"x": 1.0 + 1e-9, "n": 3, "z": None}]}, expected) == []
    assert diff_reports({"a": [{"x": 1.001, "n": 3, "z": None}]}, expected)
    assert diff_reports({"a": [{"x": 1.0, "n": 3.0, "z": None}]}, expected)
    assert diff_reports({"a": [{"x": 1.0, "n": 3, "z": 0.0}]}, expected)
    assert diff_reports({"a": [{"x": 1.0, "n": 3}]}, expected)


def test_table_format_is_readable(tmp_path: Path):
    example = EXAMPLES[0]  # small
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "report", "--events", str(example / "events.jsonl"),
         "--as-of", (example / "as_of.txt").read_text().strip(),
         "--config", str(example / "config.toml"), "--format", "table"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "month offset 0: 2026-11-01T00:00:00+00:00" in proc.stdout
    assert "Revenue won" in proc.stdout and "target" in proc.stdout
