"""Render the dashboards to JSON: ``python -m grafana.build [--out DIR] [--config FILE] [--check]``.

Why committed JSON: Grafana provisioning and ``kpi-engine grafana push`` read plain files, and
a reviewer sees in the diff what a change to the Python does to the dashboards. The output is
deterministic (sorted keys, fixed uids and panel ids), so ``--check`` (and
``tests/test_grafana_dashboards.py``) can tell when the committed files are stale.

Without ``--config`` the dashboards get the engine's built-in defaults (UTC, weeks from Monday,
fiscal year from January, USD): that is what is committed. A deployment whose engine runs in
another zone or currency builds its own copy with ``--config its.toml --out DIR``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.dashboards_src import DASHBOARDS
from grafana.settings import DashboardSettings

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"


def build_models(settings: DashboardSettings) -> dict[str, Dashboard]:
    """File name -> dashboard model."""
    return {f"{name}.json": module.build(settings) for name, module in DASHBOARDS.items()}


def render(model: Dashboard) -> str:
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(model) + "\n"


def render_all(settings: DashboardSettings) -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {name: render(model) for name, model in build_models(settings).items()}


def write(out_dir: Path, settings: DashboardSettings) -> list[Path]:
    """Write every dashboard into ``out_dir`` (created if needed); returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all(settings).items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(out_dir: Path, settings: DashboardSettings) -> list[str]:
    """Names of files in ``out_dir`` that differ from a fresh build, are missing, or are extra."""
    expected = render_all(settings)
    present = {p.name for p in out_dir.glob("*.json")} if out_dir.is_dir() else set()
    problems = [f"{name}: extra (no generator)" for name in sorted(present - set(expected))]
    for name, text in expected.items():
        path = out_dir / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: differs from its generator")
    return problems


def settings_for(config_path: str | None) -> DashboardSettings:
    if config_path is None:
        return DashboardSettings()
    from engine.config import load_config

    return DashboardSettings.from_config(load_config(config_path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR, metavar="DIR",
                        help=f"where to write the JSON files (default: {DASHBOARDS_DIR})")
    parser.add_argument("--config", metavar="FILE.toml",
                        help="take time zone, week start, fiscal year and currency from this "
                             "engine configuration (default: the built-in defaults, as committed)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the files in --out are stale")


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args.config)
    if args.check:
        problems = stale_files(args.out, settings)
        for problem in problems:
            print(f"stale: {args.out / problem}", file=sys.stderr)
        if problems:
            print("regenerate with: python -m grafana.build (or kpi-engine grafana build)",
                  file=sys.stderr)
        return 1 if problems else 0
    for path in write(args.out, settings):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.build",
                                     description="Render the KPI dashboards to JSON.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
