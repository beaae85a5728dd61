"""``kpi-engine validate`` as a user runs it: a subprocess, its output lines and exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.event import REASON_CODES

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "bad_events.jsonl"
EXPECTED = ROOT / "tests" / "data" / "bad_events.expected.tsv"
EXAMPLE = Path("/work/shared/spec/examples/small")
LIVE_ONLY = {"future_timestamp", "too_late"}

# The configuration the corpus is written for: its currency lines assume EUR and its
# too_large lines are a few KiB, so the limit is lowered instead of committing 1 MiB lines.
CORPUS_CONFIG = """\
[money]
currency = "EUR"

[limits]
max_event_bytes = 4096
"""


def validate(*args: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}  # no stray config
    return subprocess.run([sys.executable, "-m", "engine.cli", "validate", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture()
def corpus_config(tmp_path):
    path = tmp_path / "corpus.toml"
    path.write_text(CORPUS_CONFIG)
    return path


def expected_rows() -> list[tuple[int, str]]:
    rows = []
    for line in EXPECTED.read_text().splitlines():
        number, reason = line.split("\t")
        rows.append((int(number), reason))
    return rows


def test_corpus_reports_exactly_the_expected_line_and_reason(corpus_config):
    done = validate(CORPUS, "--config", corpus_config)
    assert done.returncode == 1, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert all(len(row) == 3 and row[2] for row in rows), done.stdout
    assert [(int(number), reason) for number, reason, _ in rows] == expected_rows()


def test_summary_counts_non_blank_lines_and_invalid_events(corpus_config):
    done = validate(CORPUS, "--config", corpus_config)
    non_blank = sum(1 for line in CORPUS.read_bytes().split(b"\n") if line.strip())
    summary = f"{non_blank} lines, {len(expected_rows())} invalid"
    assert done.stderr.strip().splitlines()[-1] == summary


def test_corpus_covers_every_reason_code_except_the_live_ones():
    counts: dict[str, int] = {}
    for _, reason in expected_rows():
        counts[reason] = counts.get(reason, 0) + 1
    assert set(counts) == set(REASON_CODES) - LIVE_ONLY
    assert all(n >= 3 for n in counts.values()), counts


def test_corpus_has_blank_lines_crlf_lines_and_a_last_line_without_newline():
    data = CORPUS.read_bytes()
    lines = data.split(b"\n")
    assert b"" in lines[:-1]  # an empty line
    assert any(line.strip() == b"" and line for line in lines)  # whitespace only
    assert any(line.endswith(b"\r") and line.strip() for line in lines)  # CRLF event lines
    assert not data.endswith(b"\n")
    assert int(EXPECTED.read_text().splitlines()[-1].split("\t")[0]) == len(lines)


def test_valid_file_exits_zero_and_prints_nothing():
    if not (EXAMPLE / "events.jsonl").exists():
        pytest.skip("spec examples not available")
    done = validate(EXAMPLE / "events.jsonl", "--config", EXAMPLE / "config.toml")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip().endswith(" lines, 0 invalid")


def test_currency_comes_from_the_config(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id":"e","type":"spend.recorded","occurred_at":'
                      '"2026-01-01T00:00:00Z","amount":1,"category":"sales","currency":"EUR"}\n')
    config = tmp_path / "c.toml"
    config.write_text('[money]\ncurrency = "EUR"\n')
    assert validate(events, "--config", config).returncode == 0
    done = validate(events)  # default currency USD
    assert done.returncode == 1
    assert done.stdout.startswith("1\tcurrency_mismatch\t")


def test_missing_file_is_a_clear_error_with_exit_2(tmp_path):
    done = validate(tmp_path / "nope.jsonl")
    assert done.returncode == 2
    assert "nope.jsonl" in done.stderr and done.stdout == ""


def test_bad_config_exits_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[money]\ncurrency = \n")
    done = validate(CORPUS, "--config", config)
    assert done.returncode == 2
    assert "config" in done.stderr


def test_help_documents_the_output_format():
    done = subprocess.run([sys.executable, "-m", "engine.cli", "validate", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "LINE<TAB>REASON<TAB>DETAIL" in done.stdout
    assert "exit status" in done.stdout
