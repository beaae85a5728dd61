"""The ``kpi-engine`` console command.

Each subcommand lives in its own module under :mod:`engine.commands` and exposes
``register(subparsers)``; modules are discovered, so adding a command touches one new file.
Exit status: 0 success, 1 the command's own "found a problem" outcome (e.g. invalid events),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from engine import __version__, commands
from engine.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpi-engine",
        description="Streaming sales-KPI engine: CRM events from Kafka in, exact KPIs out.",
    )
    parser.add_argument("--version", action="version", version=f"kpi-engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"engine.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"kpi-engine: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
