"""TLS of the web endpoints: the server context built from ``[web_tls]``.

Why here and not in Faust's settings directly: the context must fail at start-up with a
message naming the file (a missing or mismatched key is a configuration error, not a stack
trace on the first connection), and TLS 1.2 is the floor.
"""

from __future__ import annotations

import ssl

from engine.config import ConfigError, WebTlsConfig


def server_context(tls: WebTlsConfig) -> ssl.SSLContext | None:
    """A server-side context for ``tls``; None when TLS is not configured."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)  # type: ignore[arg-type]
    except FileNotFoundError as exc:
        raise ConfigError(f"[web_tls] file not found: {exc.filename}") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"[web_tls] certfile {tls.certfile} and keyfile {tls.keyfile} "
                          f"cannot be used together: {exc.reason or exc}") from None
    return context
