"""Access control and response hardening of the worker's web server, as one aiohttp middleware.

Why a middleware on the whole application rather than a check in each view: it runs before
*every* route, including any that Faust itself mounts, so an endpoint cannot be forgotten.
The middleware

- answers 404 for every path that is not one of the engine's endpoints (Faust's router,
  table and statistics pages are never reachable, whatever its settings say);
- answers 401 without a valid token (no token, unknown, revoked) and 403 when the token's
  audience may not call the endpoint (:data:`engine.security.audience.ENDPOINT_AUDIENCES`);
  the views then cut the document to the audience (:mod:`engine.security.audience`), so
  numbers outside it never leave the process;
- answers 400 for a query string longer than :data:`MAX_QUERY_BYTES`, and 500 without
  details (and without the request's query in the log) if a view fails anyway;
- sets ``X-Content-Type-Options``, ``Referrer-Policy: no-referrer`` (the kiosk link carries
  its token), ``Cache-Control: no-store`` on data, and a Content-Security-Policy.

Tokens come in ``Authorization: Bearer <token>``. A ``wallboard`` token may also come as
``?token=`` on the wallboard page itself (a TV cannot send headers); the page then sends it
as a header to the APIs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from engine.security.audience import (
    ENDPOINT_AUDIENCES,
    EVERYTHING,
    OPEN_ENDPOINTS,
    Grant,
    may_call,
)
from engine.security.store import Denial, TokenStore
from streams.logsafe import exception_summary

log = logging.getLogger(__name__)

GRANT_KEY = web.RequestKey("kpi_grant", Grant)
MAX_QUERY_BYTES = 2048
PAGE_PATHS = frozenset({"/wallboard", "/wallboard/"})
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"
_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps({"error": message}), status=status,
                        content_type=_JSON, headers=headers)


def authorize(store: TokenStore, request: web.Request) -> Grant | web.Response:
    """The grant for ``request``, or the 401/403 response that refuses it."""
    path = request.path
    if path in OPEN_ENDPOINTS:
        return EVERYTHING
    if not store.enabled:
        return EVERYTHING
    challenge = {"WWW-Authenticate": 'Bearer realm="kpi-engine"'}
    token = bearer_token(request)
    from_url = False
    if token is None and path in PAGE_PATHS:
        token = request.query.get("token") or None
        from_url = token is not None
    result = store.grant(token)
    if isinstance(result, Denial):
        return error(401, result.value, challenge)
    if from_url and result.audience != "wallboard":
        return error(401, "only wallboard (kiosk) tokens are accepted in the URL; send this "
                          "one as Authorization: Bearer <token>", challenge)
    if not may_call(result, path):
        return error(403, f"the {result.audience} audience may not call {path}")
    return result


def access_middleware(store: TokenStore, https: bool = False
                      ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware for ``store``'s tokens (authentication off when it has none); with
    ``https``, responses also tell browsers to use HTTPS only (HSTS)."""
    extra = {"Strict-Transport-Security": "max-age=31536000"} if https else {}

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path not in ENDPOINT_AUDIENCES and path not in OPEN_ENDPOINTS:
            return _harden(error(404, "not found"), path, extra)
        if request.method not in ("GET", "HEAD"):
            return _harden(error(405, "only GET and HEAD"), path, extra)
        if len(request.query_string) > MAX_QUERY_BYTES:
            return _harden(error(400, f"query string longer than {MAX_QUERY_BYTES} bytes"),
                           path, extra)
        granted = authorize(store, request)
        if isinstance(granted, web.Response):
            return _harden(granted, path, extra)
        request[GRANT_KEY] = granted
        try:
            response = await handler(request)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception as exc:  # never a traceback to the client, never the query in the log
            log.error("%s %s failed: %s", request.method, path, exception_summary(exc))
            return _harden(error(500, "internal error"), path, extra)
        return _harden(response, path, extra)

    return access


def _harden(response: web.StreamResponse, path: str,
            extra: dict[str, str]) -> web.StreamResponse:
    headers = response.headers
    headers.update(extra)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Content-Security-Policy", DATA_CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    if path in PAGE_PATHS:
        headers.setdefault("Cache-Control", "no-cache")  # the page holds no data
    elif path not in OPEN_ENDPOINTS:
        headers["Cache-Control"] = "no-store"
    return response


def grant_of(request: web.Request) -> Grant:
    """The grant the middleware attached (KeyError without it: fail closed)."""
    return request[GRANT_KEY]
