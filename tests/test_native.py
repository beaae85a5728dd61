"""The compiled build (engine/native.py): in use when current, ignored when stale, and giving
exactly what the interpreted sources give.

Why these tests: the compiled modules are an accelerator of the one source of truth. Users rely
on two things — that it is the build actually running (else the throughput targets are not
met), and that it can never change a number: the same files through ``kpi-engine report`` and
``kpi-engine validate`` must give the same bytes compiled and interpreted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.core
import engine.decode
from engine import native
from engine.event import MICRO, to_micros
from engine.kpis import growth, money, ratio

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "golden" / "small"  # the spec example, kept in the repository


def _run(args: list[str], *, pure: bool, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    environment.pop(native.PURE_ENV, None)
    if pure:
        environment[native.PURE_ENV] = "1"
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment,
                          capture_output=True, timeout=300)


def test_the_compiled_build_is_current_and_loaded():
    usable, why = native.status()
    if os.environ.get(native.PURE_ENV):
        pytest.skip(f"{native.PURE_ENV} is set")
    assert usable, f"the compiled build is not in use: {why} — run `kpi-engine native build`"
    for module in (engine.core, engine.decode):
        assert native.is_compiled(module), module.__file__


def test_a_child_process_runs_the_build_unless_told_not_to(monkeypatch):
    monkeypatch.delenv(native.PURE_ENV, raising=False)
    current = native.status()[0]
    code = "import engine.core, engine.native as n; print(n.is_compiled(engine.core))"
    assert _run(["-c", code], pure=False).stdout.strip() == str(current).encode()
    assert _run(["-c", code], pure=True).stdout.strip() == b"False"


@pytest.mark.skipif(not native.read_manifest(), reason="no compiled build to copy")
def test_a_build_older_than_its_sources_is_ignored(tmp_path):
    """Edit a compiled module's source in a copy of the package: the copy must import it
    interpreted, and say why; the untouched copy imports the build."""
    for name in ("fresh", "edited"):
        shutil.copytree(ROOT / "engine", tmp_path / name / "engine",
                        ignore=shutil.ignore_patterns("__pycache__"))
    edited = tmp_path / "edited" / "engine" / "core.py"
    edited.write_text(edited.read_text() + "\n# an edit after the build\n")
    code = ("import engine.core, engine.native as n; "
            "print(n.is_compiled(engine.core), n.status()[1], sep='|')")
    for name, compiled, reason in (("fresh", "True", "compiled"),
                                   ("edited", "False", "sources changed since the build")):
        result = _run(["-c", code], pure=False, cwd=tmp_path / name,
                      PYTHONPATH=str(tmp_path / name))
        assert result.returncode == 0, result.stderr.decode()
        loaded, why = result.stdout.decode().strip().split("|")
        assert (loaded, reason in why) == (compiled, True), why


def test_status_explains_a_missing_or_foreign_build(tmp_path):
    assert native.status(tmp_path / "none", honour_env=False) == (
        False, "not built (kpi-engine native build)")
    (tmp_path / native.MANIFEST).write_text(json.dumps({"abi": "cpython-27 .so"}))
    usable, why = native.status(tmp_path, honour_env=False)
    assert not usable and "another Python" in why


def _differential(args: list[str]) -> None:
    compiled = _run(["-m", "engine.cli", *args], pure=False)
    interpreted = _run(["-m", "engine.cli", *args], pure=True)
    assert (compiled.returncode, compiled.stdout, compiled.stderr) == (
        interpreted.returncode, interpreted.stdout, interpreted.stderr)


@pytest.fixture(scope="module")
def noisy_events(tmp_path_factory) -> Path:
    """Generated history with redeliveries and invalid lines of every kind."""
    path = tmp_path_factory.mktemp("native") / "events.jsonl"
    result = _run(["-m", "engine.cli", "generate", "--seed", "11", "--from", "2025-01-01",
                   "--to", "2025-06-01", "--events", "30000", "--duplicates", "0.03",
                   "--invalid", "0.03", "--out", str(path)], pure=True)
    assert result.returncode == 0, result.stderr.decode()
    return path


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_compiled_and_interpreted_reports_are_byte_identical(noisy_events, fmt):
    _differential(["report", "--events", str(noisy_events), "--as-of", "2025-05-20T13:00:00Z",
                   "--format", fmt])


def test_compiled_and_interpreted_agree_on_the_spec_example():
    _differential(["report", "--events", str(EXAMPLE / "events.jsonl"),
                   "--config", str(EXAMPLE / "config.toml"),
                   "--as-of", (EXAMPLE / "as_of.txt").read_text().strip()])


def test_compiled_and_interpreted_reject_alike(noisy_events):
    _differential(["validate", str(noisy_events)])


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=1 << 80), st.integers(min_value=1, max_value=1 << 80))
def test_ratios_of_large_sums_round_as_python_does(numerator, denominator):
    """Sums of µs and micro-units pass 2**53; the (compiled) KPI formulas must still divide
    exactly as Python's integer division does, not after converting to floats."""
    assert ratio(numerator, denominator) == numerator / denominator
    assert money(numerator) == numerator / MICRO
    assert growth(numerator, denominator) == numerator / denominator - 1
    assert to_micros(numerator) == numerator * MICRO


def test_the_native_command_reports_status_and_explains_a_build_it_cannot_make():
    status = _run(["-m", "engine.cli", "native", "status"], pure=True)
    assert (status.returncode, status.stdout.strip()) == (1, f"{native.PURE_ENV} is set".encode())
    # Without mypy the build cannot be made: a clear error, exit 1, or 0 with --if-possible
    # (setup then goes on with the interpreted engine). The existing build is left alone.
    before = native.read_manifest()
    code = ("import sys; sys.modules['mypy'] = None; from engine.cli import main; "
            "sys.exit(main(['native', 'build', '--force'] + sys.argv[1:]))")
    for extra, expected in (([], 1), (["--if-possible"], 0)):
        result = _run(["-c", code, *extra], pure=False)
        assert result.returncode == expected
        assert b"mypy is not installed" in result.stderr
    assert native.read_manifest() == before
