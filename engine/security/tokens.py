"""Bearer tokens: made once, shown once, stored only as their SHA-256.

Why hashes at rest: the configuration (a file, an environment variable, a compose secret) is
read by more people and tools than the HTTP clients that hold the tokens; a leaked
configuration must not be a leaked token. A token is 32 random bytes, so an unsalted SHA-256
is enough (nothing to brute-force).

A *token line* describes one token, in files, in ``KPI_AUTH_TOKENS`` and in ``[auth] tokens``::

    sha256=<64 hex> audience=manager teams=dach,france name=anna
    sha256=<64 hex> audience=rep rep=rep-017 name=bob revoked

Fields are ``key=value`` separated by blanks; ``revoked`` alone (or ``revoked=true``) revokes
the token without forgetting who it was for; ``#`` starts a comment line.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

AUDIENCES = ("executive", "manager", "rep", "wallboard", "metrics")
TOKEN_PREFIX = "kpi_"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9._@:+-]{1,200}")
_KEYS = ("sha256", "audience", "teams", "rep", "name", "revoked")


class TokenError(ValueError):
    """A token line that cannot be used; the message says which line and why."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One configured token: its hash and what its holder may see."""

    sha256: str
    audience: str
    teams: tuple[str, ...] = ()
    rep: str | None = None
    name: str | None = None
    revoked: bool = False

    def __repr__(self) -> str:  # the hash is not secret, but has no business in logs either
        return (f"TokenEntry(audience={self.audience!r}, name={self.name!r}, "
                f"teams={self.teams!r}, rep={self.rep!r}, revoked={self.revoked})")


def new_token() -> str:
    """A fresh random token (URL-safe, so a kiosk link can carry it)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which ``token`` is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_token_line(line: str, where: str = "token line") -> TokenEntry | None:
    """The entry a line describes; None for a blank or comment line; TokenError otherwise."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    values: dict[str, str] = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if key == "revoked" and not sep:
            value = "true"
        elif not sep:
            raise TokenError(f"{where}: expected key=value, got {part!r}")
        if key not in _KEYS:
            raise TokenError(f"{where}: unknown key {key!r} (known: {', '.join(_KEYS)})")
        if key in values:
            raise TokenError(f"{where}: {key} given twice")
        values[key] = value
    digest = values.get("sha256", "").lower()
    if not _HEX64.fullmatch(digest):
        raise TokenError(f"{where}: sha256 must be 64 hex digits (the hash, never the token)")
    audience = values.get("audience")
    if audience not in AUDIENCES:
        raise TokenError(f"{where}: audience must be one of {', '.join(AUDIENCES)}")
    teams = tuple(t for t in values.get("teams", "").split(",") if t)
    rep = values.get("rep") or None
    for name in (*teams, *([rep] if rep else []), *([values["name"]] if "name" in values else [])):
        if not _NAME.fullmatch(name):
            raise TokenError(f"{where}: {name!r} is not a valid team, rep or token name")
    if audience == "manager" and not teams:
        raise TokenError(f"{where}: a manager token needs teams=<team>[,<team>...]")
    if teams and audience not in ("manager", "wallboard"):
        raise TokenError(f"{where}: teams= applies to manager and wallboard tokens only")
    if audience == "rep" and rep is None:
        raise TokenError(f"{where}: a rep token needs rep=<rep id>")
    if rep is not None and audience != "rep":
        raise TokenError(f"{where}: rep= applies to rep tokens only")
    revoked = values.get("revoked", "false").lower()
    if revoked not in ("true", "false"):
        raise TokenError(f"{where}: revoked must be true or false")
    return TokenEntry(sha256=digest, audience=audience, teams=teams, rep=rep,
                      name=values.get("name"), revoked=revoked == "true")


def parse_token_lines(lines: Iterable[str], where: str) -> list[TokenEntry]:
    """Every entry of ``lines`` (``where``: the source, for messages), checking duplicates."""
    out: list[TokenEntry] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        entry = parse_token_line(line, f"{where} line {number}")
        if entry is None:
            continue
        if entry.sha256 in seen:
            raise TokenError(f"{where} line {number}: the same token is listed twice")
        seen.add(entry.sha256)
        out.append(entry)
    return out


def split_token_lines(text: str) -> list[str]:
    """Lines of a ``KPI_AUTH_TOKENS`` value: separated by newlines or semicolons."""
    return [line for chunk in text.splitlines() for line in chunk.split(";")]


def format_token_line(entry: TokenEntry) -> str:
    """The line that :func:`parse_token_line` reads back as ``entry``."""
    parts = [f"sha256={entry.sha256}", f"audience={entry.audience}"]
    if entry.teams:
        parts.append("teams=" + ",".join(entry.teams))
    if entry.rep:
        parts.append(f"rep={entry.rep}")
    if entry.name:
        parts.append(f"name={entry.name}")
    if entry.revoked:
        parts.append("revoked")
    return " ".join(parts)
