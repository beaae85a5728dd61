"""The tokens a running worker accepts: from the configuration, its environment and a file.

Why a store that re-reads its file: a kiosk link hangs on a TV for months; revoking it (mark
the line ``revoked`` or delete it) must take effect without restarting the worker. The file is
checked at most once a second (its modification time and size), and a file that became
unreadable or invalid keeps the last good set and is reported in the log once, so a typo
while editing never opens or closes everything.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from engine.config import AuthConfig, ConfigError
from engine.security.audience import Grant
from engine.security.tokens import TokenEntry, TokenError, parse_token_lines, token_hash

log = logging.getLogger(__name__)

RELOAD_CHECK_SECONDS = 1.0


class Denial(Enum):
    """Why a presented token gives no access (the 401's reason; never echoes the token)."""

    MISSING = "no token: send Authorization: Bearer <token>"
    UNKNOWN = "unknown token"
    REVOKED = "this token has been revoked"


class TokenStore:
    """Looks tokens up by hash; ``None`` config tokens and file means authentication is off."""

    def __init__(self, auth: AuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = auth.enabled
        self._clock = clock
        self._inline = parse_token_lines(auth.tokens, "[auth] tokens")
        self._file = Path(auth.tokens_file) if auth.tokens_file else None
        self._file_stamp: tuple[int, int] | None = None
        self._file_entries: list[TokenEntry] = []
        self._checked_at = float("-inf")
        self._complained: str | None = None
        self._by_hash: dict[str, TokenEntry] = {}
        if self._file is not None:
            try:
                self._file_entries = self._read_file()
            except (OSError, TokenError) as exc:
                raise ConfigError(f"[auth] tokens_file: {exc}") from None
            warning = tokens_file_mode_warning(self._file)
            if warning:
                log.warning("%s", warning)
        self._rebuild()

    def __len__(self) -> int:
        return sum(1 for e in self._by_hash.values() if not e.revoked)

    def _read_file(self) -> list[TokenEntry]:
        assert self._file is not None
        stat = self._file.stat()
        entries = parse_token_lines(self._file.read_text(encoding="utf-8").splitlines(),
                                    str(self._file))
        self._file_stamp = (stat.st_mtime_ns, stat.st_size)
        return entries

    def _rebuild(self) -> None:
        by_hash: dict[str, TokenEntry] = {}
        for entry in (*self._inline, *self._file_entries):
            earlier = by_hash.get(entry.sha256)
            # Listed twice (config and file): revoked anywhere means revoked.
            if earlier is None or entry.revoked:
                by_hash[entry.sha256] = entry
        self._by_hash = by_hash

    def refresh(self) -> None:
        """Re-read the tokens file if it changed (at most once per RELOAD_CHECK_SECONDS)."""
        if self._file is None:
            return
        now = self._clock()
        if now - self._checked_at < RELOAD_CHECK_SECONDS:
            return
        self._checked_at = now
        try:
            stat = self._file.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._file_stamp:
                return
            self._file_entries = self._read_file()
        except FileNotFoundError:
            # Deleted: fail closed, its tokens no longer work.
            if self._file_entries:
                log.warning("tokens file %s is gone: its tokens no longer work", self._file)
            self._file_entries, self._file_stamp = [], None
        except (OSError, TokenError) as exc:
            # Unreadable or invalid (mid-edit): keep the last good set, say so once.
            if self._complained != str(exc):
                self._complained = str(exc)
                log.warning("tokens file %s not reloaded, keeping the previous tokens: %s",
                            self._file, exc)
            return
        self._complained = None
        self._rebuild()
        log.info("tokens file %s reloaded: %d active tokens", self._file, len(self))

    def grant(self, token: str | None) -> Grant | Denial:
        """The grant of ``token``, or why there is none."""
        if not token:
            return Denial.MISSING
        self.refresh()
        entry = self._by_hash.get(token_hash(token))
        if entry is None:
            return Denial.UNKNOWN
        if entry.revoked:
            return Denial.REVOKED
        return Grant(entry.audience, frozenset(entry.teams), entry.rep, entry.name)


def tokens_file_mode_warning(path: str | os.PathLike[str]) -> str | None:
    """A warning if the tokens file is writable by others (anyone could add a token)."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None
    if mode & 0o022:
        return f"{path} is writable by group or others: anyone who can write it can add a token"
    return None
