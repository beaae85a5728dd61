"""The ``kpi-engine`` console command.

Each subcommand lives in its own module under :mod:`engine.commands` and exposes
``register(subparsers)``; modules are discovered, so adding a command touches one new file.
A command whose module bears its name (``-`` as ``_``) is started with that module alone:
importing every command (Kafka clients, the demo, the generator) would cost a file report a
tenth of a second for nothing.
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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the commands of module ``only``."""
    return _parser(only)[0]


def _parser(only: str | None) -> tuple[argparse.ArgumentParser, set[str]]:
    parser = argparse.ArgumentParser(
        prog="kpi-engine",
        description="Streaming sales-KPI engine: CRM events from Kafka in, exact KPIs out.",
    )
    parser.add_argument("--version", action="version", version=f"kpi-engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [only] if only is not None else sorted(
        m.name for m in pkgutil.iter_modules(commands.__path__))
    for name in names:
        module = importlib.import_module(f"engine.commands.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser, set(sub.choices)


def _module_of(argv: list[str]) -> str | None:
    """The command module named by the first argument, if there is one."""
    if not argv or argv[0].startswith("-"):
        return None
    name = argv[0].replace("-", "_")
    known = {m.name for m in pkgutil.iter_modules(commands.__path__)}
    return name if name in known else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = _module_of(argv)
    parser, known = _parser(only)
    if only is not None and argv[0] not in known:
        parser = build_parser()  # the module registers other names: the whole parser
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
