"""``kpi-engine token new|revoke``: bearer tokens for the web endpoints, stored hashed.

``new`` prints the token once, on the first line; the second line is what goes into the
configuration (``[auth] tokens_file``, ``[auth] tokens`` or ``KPI_AUTH_TOKENS``): its SHA-256
and its audience, never the token itself. ``--file`` appends that line to a tokens file
(created with mode 0600), which a running worker picks up within a second. ``revoke`` marks
the lines of a tokens file with a given name as revoked (the worker answers 401 for them
within a second), keeping them so the file still says who had access.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from engine.security.tokens import (
    AUDIENCES,
    TokenEntry,
    TokenError,
    format_token_line,
    new_token,
    parse_token_line,
    token_hash,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "token", help="make or revoke bearer tokens for the web endpoints (stored hashed)",
        description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    new = sub.add_parser("new", help="make a token; print it and its hash line")
    new.add_argument("--audience", required=True, choices=AUDIENCES)
    new.add_argument("--teams", metavar="T1,T2", default="",
                     help="manager (required) or wallboard (optional): the teams it may see")
    new.add_argument("--rep", metavar="REP", help="rep (required): the rep id")
    new.add_argument("--name", metavar="NAME", help="who or what holds it (for revoking)")
    new.add_argument("--file", metavar="FILE",
                     help="also append the hash line to this tokens file")
    new.set_defaults(func=run_new)
    revoke = sub.add_parser("revoke", help="mark a tokens file's lines with NAME as revoked")
    revoke.add_argument("--file", metavar="FILE", required=True, help="the tokens file")
    revoke.add_argument("--name", metavar="NAME", required=True)
    revoke.set_defaults(func=run_revoke)


def run_new(args: argparse.Namespace) -> int:
    token = new_token()
    entry = TokenEntry(sha256=token_hash(token), audience=args.audience,
                       teams=tuple(t.strip() for t in args.teams.split(",") if t.strip()),
                       rep=args.rep, name=args.name)
    line = format_token_line(entry)
    try:
        parse_token_line(line, "the new token")  # the same checks the worker makes
    except TokenError as exc:
        print(f"kpi-engine token: {exc}", file=sys.stderr)
        return 2
    if args.file:
        path = Path(args.file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(line + "\n")
    print(f"token: {token}")
    print(line)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        print(f"kpi-engine token: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    out, revoked = [], 0
    for number, line in enumerate(lines, start=1):
        try:
            entry = parse_token_line(line, f"{path} line {number}")
        except TokenError as exc:
            print(f"kpi-engine token: {exc}", file=sys.stderr)
            return 2
        if entry is not None and entry.name == args.name and not entry.revoked:
            line = format_token_line(replace(entry, revoked=True))
            revoked += 1
        out.append(line)
    if not revoked:
        print(f"kpi-engine token: no active token named {args.name!r} in {path}",
              file=sys.stderr)
        return 1
    # Written next to it and renamed over it: the worker never reads half a file.
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(out) + "\n")
    os.replace(temporary, path)
    print(f"revoked {revoked} token{'s' * (revoked != 1)} named {args.name!r}")
    return 0
