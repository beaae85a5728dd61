"""How the live tests reach a worker's web endpoints: openly, or with tokens and HTTPS.

Why one helper: the live tests (file report equivalence, ingest, dashboards, the wallboard in
a browser) start real workers and read them over HTTP, from Python, Prometheus and Chromium.
With ``KPI_TEST_WEB_SECURITY=tokens_tls`` (``scripts/test.sh`` sets it, with
``KPI_TEST_KAFKA_SECURITY=sasl_ssl``, for the secure pass) every one of them must run the way
a locked-down deployment does (docs/security.md): ``[auth]`` tokens of every audience,
``[web_tls]`` with a certificate from a CA made at run time, Prometheus scraping with the
``metrics`` token, the wallboard opened through its kiosk link. Each test writes
:meth:`WebAccess.config_toml` into its worker's configuration and talks through this object,
so that the same test body runs in both modes and the secure setup exists once.

Without the switch, :meth:`WebAccess.config_toml` is empty and requests go out as before
(plain HTTP, no token): the default run is unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine.security.ca import LocalCA
from engine.security.tokens import (
    AUDIENCES,
    TokenEntry,
    format_token_line,
    new_token,
    token_hash,
)

#: ``tokens_tls`` turns on tokens and HTTPS for the workers of the live tests.
SECURITY_ENV = "KPI_TEST_WEB_SECURITY"
SECURE_VALUE = "tokens_tls"
#: The scopes the test tokens are made with (a manager of one team, one rep).
MANAGER_TEAMS = ("dach",)
REP = "rep-001"


@dataclass(frozen=True)
class WebAccess:
    """The tokens (audience -> token; empty: authentication off) and the TLS files."""

    tokens: dict[str, str] = field(default_factory=dict)
    certfile: Path | None = None
    keyfile: Path | None = None
    cafile: Path | None = None
    metrics_token_file: Path | None = None

    @property
    def secure(self) -> bool:
        return bool(self.tokens)

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    def base(self, port: int, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{port}"

    def config_toml(self) -> str:
        """The ``[auth]`` and ``[web_tls]`` sections for a worker's TOML file ("" when open)."""
        if not self.secure:
            return ""
        lines = [format_token_line(TokenEntry(
            sha256=token_hash(token), audience=audience, name=f"test-{audience}",
            teams=MANAGER_TEAMS if audience == "manager" else (),
            rep=REP if audience == "rep" else None)) for audience, token in self.tokens.items()]
        text = "\n[auth]\ntokens = " + json.dumps(lines) + "\n"
        if self.certfile:
            text += (f"[web_tls]\ncertfile = {json.dumps(str(self.certfile))}\n"
                     f"keyfile = {json.dumps(str(self.keyfile))}\n")
        return text

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting the run-time CA only (None for plain HTTP)."""
        return ssl.create_default_context(cafile=str(self.cafile)) if self.cafile else None

    def fetch(self, url: str, token: str | None, timeout: float = 60) -> tuple[int, bytes]:
        """``GET url`` with ``token`` as the bearer token (None: without): status and body."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout,
                                        context=self.ssl_context()) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def request(self, url: str, audience: str | None = "executive",
                timeout: float = 60) -> tuple[int, bytes]:
        """``GET url`` as ``audience`` (None, or no tokens: without a token)."""
        return self.fetch(url, self.tokens.get(audience) if audience else None, timeout)

    def get_json(self, url: str, audience: str | None = "executive", timeout: float = 60) -> Any:
        """The JSON body of ``GET url`` as ``audience``; AssertionError (with the status and the
        start of the body) for any other status than 200."""
        status, body = self.request(url, audience, timeout)
        if status != 200:
            raise AssertionError(f"GET {url} as {audience}: {status} {body[:300]!r}")
        return json.loads(body)

    def kiosk_link(self, base: str, **query: str) -> str:
        """The wallboard URL a TV opens: with the ``wallboard`` token in it when secure."""
        if self.secure:
            query = {**query, "token": self.tokens["wallboard"]}
        return f"{base}/wallboard" + ("?" + urllib.parse.urlencode(query) if query else "")

    def scrape_config(self) -> dict[str, Any]:
        """What a Prometheus scrape job of the worker needs besides its targets: the scheme,
        the CA, and the ``metrics`` token as the shipped prometheus/prometheus.yml sends it
        (``authorization`` with a ``credentials_file``)."""
        if not self.secure:
            return {}
        out: dict[str, Any] = {"authorization": {
            "type": "Bearer", "credentials_file": str(self.metrics_token_file)}}
        if self.certfile:
            out.update(scheme="https", tls_config={"ca_file": str(self.cafile)})
        return out

    def chromium_flags(self) -> tuple[str, ...]:
        """Chromium flags that make it trust the worker's certificate (its public key only):
        headless Chromium has no CA store to add the run-time CA to."""
        if not self.certfile:
            return ()
        cert = x509.load_pem_x509_certificate(self.certfile.read_bytes())
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
        return (f"--ignore-certificate-errors-spki-list={pin}",)

    def assert_enforced(self, base: str) -> None:
        """When secure: the worker at ``base`` really runs with tokens and HTTPS (no token and
        a wrong token get 401, a token outside its audience 403, plain HTTP no data). Proves
        that a secure pass ran secured; nothing to check when open."""
        if not self.secure:
            return
        for path in ("/api/kpis", "/metrics", "/api/live", "/wallboard"):
            status, _ = self.request(base + path, audience=None)
            assert status == 401, (path, status)
        assert self.fetch(base + "/api/kpis", new_token())[0] == 401
        assert self.request(base + "/api/kpis", audience="metrics")[0] == 403
        assert self.request(base + "/metrics", audience="wallboard")[0] == 403
        assert self.request(base + "/metrics", audience="metrics")[0] == 200
        if self.certfile:
            plain = base.replace("https://", "http://", 1)
            try:
                status, _ = WebAccess().request(plain + "/api/kpis", audience=None, timeout=10)
            except (OSError, http.client.HTTPException):  # the TLS port drops plain HTTP
                return
            assert status == 400, status  # or answers it without data


def make_web_access(directory: Path, environ: Mapping[str, str] = os.environ) -> WebAccess:
    """Open (the default), or with ``KPI_TEST_WEB_SECURITY=tokens_tls`` tokens of every
    audience and a server certificate from a CA made in ``directory``."""
    value = environ.get(SECURITY_ENV, "").strip().lower()
    if not value:
        return WebAccess()
    if value != SECURE_VALUE:
        raise ValueError(f"{SECURITY_ENV} must be {SECURE_VALUE!r} or empty, got {value!r}")
    ca = LocalCA(directory / "ca")
    server = ca.issue("worker-web", hosts=("127.0.0.1", "localhost"))
    tokens = {audience: new_token() for audience in AUDIENCES}
    metrics_file = directory / "metrics.token"
    fd = os.open(metrics_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(tokens["metrics"] + "\n")
    return WebAccess(tokens=tokens, certfile=server.certfile, keyfile=server.keyfile,
                     cafile=ca.certfile, metrics_token_file=metrics_file)
