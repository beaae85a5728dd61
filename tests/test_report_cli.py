"""``kpi-engine report``: clear errors and counted invalid lines, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "report", *args],
                          capture_output=True, text=True, timeout=120)


def test_zoneless_as_of_is_a_usage_error(tmp_path: Path):
    events = tmp_path / "e.jsonl"
    events.write_text("")
    proc = run("--events", str(events), "--as-of", "2026-11-01T02:51:00")
    assert proc.returncode == 2
    assert "zone" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_events_file_is_a_clear_error(tmp_path: Path):
    proc = run("--events", str(tmp_path / "nope.jsonl"), "--as-of", "2026-11-01T00:00:00Z")
    assert proc.returncode == 2
    assert "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_is_a_clear_error(tmp_path: Path):
    events = tmp_path / "e.jsonl"
    events.write_text("")
    config = tmp_path / "c.toml"
    config.write_text('[calendar]\ntimezone = "Mars/Olympus"\n')
    proc = run("--events", str(events), "--as-of", "2026-11-01T00:00:00Z",
               "--config", str(config))
    assert proc.returncode == 2
    assert "timezone" in proc.stderr and "Traceback" not in proc.stderr


def test_invalid_lines_are_counted_and_listed(tmp_path: Path):
    events = tmp_path / "e.jsonl"
    good = {"event_id": "a1", "type": "activity.logged", "occurred_at": "2026-10-31T10:00:00Z",
            "team_id": "t", "rep_id": "r", "activity_type": "call"}
    events.write_text("\n".join([json.dumps(good), "{not json", "", json.dumps(good),
                                 json.dumps({**good, "event_id": "a2", "activity_type": "fax"})])
                      + "\n")
    proc = run("--events", str(events), "--as-of", "2026-11-01T00:00:00Z")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["events"] == {"read": 4, "counted": 1, "duplicate": 1, "invalid": 2,
                                "not_visible": 0}
    assert "line 2: malformed_json" in proc.stderr
    assert "line 5: invalid_field" in proc.stderr
