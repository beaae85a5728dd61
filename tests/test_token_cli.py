"""``kpi-engine token new``: the token is printed once, only its hash line is kept."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import AuthConfig, config_from_mapping
from engine.security.store import Denial, TokenStore
from engine.security.tokens import parse_token_line, token_hash


def test_new_prints_a_token_and_appends_only_its_hash_line(tmp_path: Path, capsys) -> None:
    tokens = tmp_path / "tokens"
    assert main(["token", "new", "--audience", "rep", "--rep", "rep-017", "--name", "bob",
                 "--file", str(tokens)]) == 0
    first, line = capsys.readouterr().out.splitlines()
    token = first.removeprefix("token: ")
    entry = parse_token_line(line)
    assert entry.sha256 == token_hash(token) and (entry.audience, entry.rep) == ("rep", "rep-017")
    assert tokens.read_text() == line + "\n" and token not in tokens.read_text()
    assert tokens.stat().st_mode & 0o077 == 0
    assert main(["token", "new", "--audience", "wallboard", "--file", str(tokens)]) == 0
    second_token = capsys.readouterr().out.splitlines()[0].removeprefix("token: ")
    store = TokenStore(AuthConfig(tokens_file=str(tokens)))
    assert store.grant(token).rep == "rep-017"
    assert store.grant(second_token).audience == "wallboard"
    config = config_from_mapping({"auth": {"tokens": [line]}})
    assert config.auth.tokens == (line,)


@pytest.mark.parametrize("args", [["--audience", "manager"], ["--audience", "rep"],
                                  ["--audience", "executive", "--rep", "r1"]])
def test_incomplete_scopes_are_refused(args: list[str], capsys) -> None:
    assert main(["token", "new", *args]) == 2
    assert "kpi_" not in capsys.readouterr().out


def test_a_tokens_file_others_may_write_is_reported(tmp_path: Path, caplog) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    os.chmod(tokens, 0o666)
    with caplog.at_level(logging.WARNING):
        TokenStore(AuthConfig(tokens_file=str(tokens)))
    assert "writable by group or others" in caplog.text


def test_revoke_marks_the_named_lines_and_the_worker_refuses_them(tmp_path: Path,
                                                                  capsys) -> None:
    tokens = tmp_path / "tokens"
    made = {}
    for name in ("tv-lobby", "ceo"):
        audience = "wallboard" if name.startswith("tv") else "executive"
        assert main(["token", "new", "--audience", audience, "--name", name,
                     "--file", str(tokens)]) == 0
        made[name] = capsys.readouterr().out.splitlines()[0].removeprefix("token: ")
    clock = [0.0]
    store = TokenStore(AuthConfig(tokens_file=str(tokens)), clock=lambda: clock[0])
    assert store.grant(made["tv-lobby"]).audience == "wallboard"
    assert main(["token", "revoke", "--file", str(tokens), "--name", "tv-lobby"]) == 0
    clock[0] += 5
    assert store.grant(made["tv-lobby"]) is Denial.REVOKED
    assert store.grant(made["ceo"]).audience == "executive"
    assert tokens.stat().st_mode & 0o077 == 0
    assert main(["token", "revoke", "--file", str(tokens), "--name", "tv-lobby"]) == 1
