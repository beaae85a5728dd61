"""``kpi-engine native build|status``: the compiled (mypyc) build of the hot path.

Why a command: ``scripts/setup.sh`` builds it after installing, and a developer who edited the
core rebuilds with it (until then the edited sources run interpreted; see engine/native.py).
Exit status: 0 built, current or (``--if-possible``) not buildable here; 1 not built/current.
"""

from __future__ import annotations

import argparse
import sys

from engine import native


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "native", help="build or inspect the compiled build of the decoder and KPI core",
        description="Compile the decoder and the KPI core with mypyc (same source, about twice "
                    "as fast), or say whether the compiled build is in use.")
    parser.add_argument("action", choices=("build", "status"), nargs="?", default="status")
    parser.add_argument("--force", action="store_true", help="build: rebuild even if current")
    parser.add_argument("--if-possible", action="store_true",
                        help="build: when it cannot be built here, say why and exit 0 (the "
                             "engine then runs interpreted)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "status":
        usable, why = native.status()
        print(why)
        return 0 if usable else 1
    try:
        if not native.build(force=args.force):
            print(f"up to date: {native.status(honour_env=False)[1]}", file=sys.stderr)
    except native.BuildError as exc:
        print(f"kpi-engine native: {exc}", file=sys.stderr)
        return 0 if args.if_possible else 1
    return 0
