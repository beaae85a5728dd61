"""HTTPS on the worker's web server, with a CA made at run time, and tokens revoked at run time.

The server is Faust's own (``app.web.start_server()``: the TCP site built from the app's
settings), so this checks the wiring of ``[web_tls]`` into it, not a test double.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from engine.config import AuthConfig, Config, ConfigError, WebTlsConfig, WorkerConfig
from engine.kafka_local import free_port
from engine.security.ca import LocalCA
from engine.security.store import Denial, TokenStore
from engine.security.tokens import TokenEntry, format_token_line, new_token, token_hash
from streams.app import create_app
from streams.metrics import WorkerMetrics
from streams.views import register_views
from static_cores import StaticCores
from engine.core import Core


def line(token: str, audience: str = "executive", revoked: bool = False) -> str:
    return format_token_line(TokenEntry(sha256=token_hash(token), audience=audience,
                                        revoked=revoked))


def test_the_web_endpoints_serve_https_with_the_configured_certificate(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "ca")
    server_cert = ca.issue("worker")
    token = new_token()
    port = free_port()
    config = replace(Config(), worker=WorkerConfig(store="memory://", web_port=port,
                                                   data_dir=str(tmp_path / "data")),
                     web_tls=WebTlsConfig(str(server_cert.certfile), str(server_cert.keyfile)),
                     auth=AuthConfig(tokens=(line(token),)))
    app = create_app(config)
    register_views(app, config, StaticCores([Core(config.calendar)]), WorkerMetrics())
    app.web.init_server()
    trusted = ssl.create_default_context(cafile=str(ca.certfile))

    async def main() -> None:
        await app.web.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"https://127.0.0.1:{port}"
                async with session.get(url + "/api/events", ssl=trusted,
                                       headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 200
                    assert (await r.json())["events"]["counted"] == 0
                    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
                async with session.get(url + "/api/events", ssl=trusted) as r:
                    assert r.status == 401
                # a client that does not trust the run-time CA refuses the server
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.get(url + "/ready", ssl=ssl.create_default_context())
                # plain HTTP to the TLS port gets no data
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/ready") as r:
                        assert r.status == 400
                        raise aiohttp.ClientError("answered plain HTTP with an error")
        finally:
            await app.web.stop_server()

    asyncio.run(main())


def test_tls_files_that_do_not_fit_are_configuration_errors(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "ca")
    one, other = ca.issue("one"), ca.issue("other")
    base = replace(Config(), worker=WorkerConfig(store="memory://"))
    with pytest.raises(ConfigError, match="cannot be used together"):
        create_app(replace(base, web_tls=WebTlsConfig(str(one.certfile), str(other.keyfile))))
    with pytest.raises(ConfigError, match="not found"):
        create_app(replace(base, web_tls=WebTlsConfig(str(tmp_path / "nope.pem"),
                                                      str(one.keyfile))))


def test_a_token_revoked_in_the_tokens_file_stops_working_without_a_restart(
        tmp_path: Path) -> None:
    kiosk, admin = new_token(), new_token()
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(line(kiosk, "wallboard") + "\n" + line(admin) + "\n")
    clock = [0.0]
    store = TokenStore(AuthConfig(tokens_file=str(tokens_file)), clock=lambda: clock[0])
    assert store.grant(kiosk).audience == "wallboard"
    tokens_file.write_text(line(kiosk, "wallboard", revoked=True) + "\n" + line(admin) + "\n")
    os.utime(tokens_file, ns=(1, 1))  # a different stamp even within the same clock tick
    clock[0] += 2
    assert store.grant(kiosk) is Denial.REVOKED
    assert store.grant(admin).audience == "executive"
    # a broken edit keeps the last good set rather than opening or closing everything
    tokens_file.write_text("sha256=oops audience=executive\n")
    clock[0] += 2
    assert store.grant(admin).audience == "executive"
    assert store.grant(kiosk) is Denial.REVOKED
    # a deleted file: its tokens no longer work
    tokens_file.unlink()
    clock[0] += 2
    assert store.grant(admin) is Denial.UNKNOWN


def test_an_unreadable_tokens_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tokens_file"):
        TokenStore(AuthConfig(tokens_file=str(tmp_path / "missing")))
    bad = tmp_path / "bad"
    bad.write_text("sha256=abc audience=rep\n")
    with pytest.raises(ConfigError, match="line 1"):
        TokenStore(AuthConfig(tokens_file=str(bad)))
