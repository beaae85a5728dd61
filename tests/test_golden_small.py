"""Golden test: the spec's public example gives exactly the report two independent
implementations of the contract produced (``expected.json``), number by number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reportdiff import diff_reports

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "spec" / "examples" / "small"
EXAMPLES = [HERE / "golden" / "small"] + ([SHARED] if SHARED.is_dir() else [])


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
    example = EXAMPLES[0]
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "report", "--events", str(example / "events.jsonl"),
         "--as-of", (example / "as_of.txt").read_text().strip(),
         "--config", str(example / "config.toml"), "--format", "table"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "month offset 0: 2026-11-01T00:00:00+00:00" in proc.stdout
    assert "Revenue won" in proc.stdout and "target" in proc.stdout
