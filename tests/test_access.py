"""Who may read what: every endpoint × every audience × {no, wrong, revoked, right token}.

The routes run on the real Faust app's aiohttp application (``create_app`` with its access
middleware and the real view registration), driven by aiohttp's test client over hand-built
cores; no Kafka. The data is chosen so that each rep's revenue is a number nobody else's scope
contains: a body that holds it leaked it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.calendar import to_micros
from engine.config import (
    AuthConfig,
    CalendarConfig,
    Config,
    ConfigError,
    MoneyConfig,
    TopicsConfig,
    WorkerConfig,
    config_from_mapping,
)
from engine.core import Core
from engine.event import MICRO, Event
from engine.security.audience import (
    COUNT_KPIS,
    WALLBOARD_KPIS,
    WALLBOARD_REP_KPIS,
    WALLBOARD_WINDOWS,
)
from engine.security.tokens import TokenEntry, format_token_line, new_token, token_hash
from streams.app import create_app
from streams.metrics import WorkerMetrics
from streams.views import register_views
from static_cores import StaticCores

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
AS_OF = (NOW + timedelta(seconds=1)).isoformat()

# (rep, team, revenue won): every amount distinct from every sum a foreign scope shows.
REPS = (("r1", "dach", 1_111), ("r2", "dach", 20_202), ("r3", "nordics", 303_003))
ENDPOINTS = ("/metrics", "/ready", "/api/kpis", "/api/events", "/api/live", "/wallboard")
ALLOWED = {
    "executive": {"/metrics", "/ready", "/api/kpis", "/api/events", "/api/live", "/wallboard"},
    "manager": {"/ready", "/api/kpis", "/api/events", "/api/live", "/wallboard"},
    "rep": {"/ready", "/api/kpis", "/api/events", "/api/live", "/wallboard"},
    "wallboard": {"/ready", "/api/kpis", "/api/events", "/api/live", "/wallboard"},
    "metrics": {"/ready", "/metrics", "/api/events"},
}
GRANTS: dict[str, dict[str, Any]] = {
    "executive": {},
    "manager": {"teams": ("dach",)},
    "rep": {"rep": "r1"},
    "wallboard": {},
    "metrics": {},
}


def _events() -> list[Event]:
    base = NOW - timedelta(hours=2)
    out: list[Event] = []
    for i, (rep, team, revenue) in enumerate(REPS):
        ts = to_micros(base + timedelta(minutes=i))
        out.append(Event(event_id=f"c{i}", type="deal.created", ts=ts, team_id=team, rep_id=rep,
                         deal_id=f"d{i}"))
        out.append(Event(event_id=f"w{i}", type="deal.closed", ts=ts + MICRO, team_id=team,
                         rep_id=rep, deal_id=f"d{i}", outcome="won", amount=revenue * MICRO,
                         customer_id=f"cust{i}", opened_at=ts))
        out.append(Event(event_id=f"a{i}", type="activity.logged", ts=ts + 2 * MICRO,
                         team_id=team, rep_id=rep, activity_type="call"))
    return out


class Tokens:
    """One right and one revoked token per audience, and the configuration holding them."""

    def __init__(self) -> None:
        self.right: dict[str, str] = {}
        self.revoked: dict[str, str] = {}
        lines = []
        for audience, scope in GRANTS.items():
            for kind in ("right", "revoked"):
                token = new_token()
                getattr(self, kind)[audience] = token
                lines.append(format_token_line(TokenEntry(
                    sha256=token_hash(token), audience=audience, name=f"{audience}-{kind}",
                    revoked=kind == "revoked", **scope)))
        self.lines = tuple(lines)


TOKENS = Tokens()


def make_config(policy: str = "none", lines: tuple[str, ...] = TOKENS.lines) -> Config:
    return replace(Config(), calendar=CalendarConfig(timezone="UTC"),
                   money=MoneyConfig(currency="EUR"), topics=TopicsConfig(partitions=2),
                   worker=WorkerConfig(store="memory://", data_dir="/nonexistent"),
                   auth=AuthConfig(tokens=lines, rep_leaderboard=policy))


class Server:
    """The real app with the views registered, kept running across the requests of a module."""

    def __init__(self, config: Config) -> None:
        core = Core(config.calendar)
        for event in _events():
            core.apply(event)
        self.app = create_app(config)
        register_views(self.app, config, StaticCores([core]), WorkerMetrics())
        self.app.web.init_server()  # mounts Faust's own pages, as the worker's start does
        self.loop = asyncio.new_event_loop()
        self.client = TestClient(TestServer(self.app.web.web_app), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def get(self, path: str, bearer: str | None = None, /,
            **query: str) -> tuple[int, Any, dict]:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}

        async def fetch() -> tuple[int, Any, dict]:
            response = await self.client.get(path, headers=headers, params=query)
            body = await response.read()
            kind = response.headers.get("Content-Type", "")
            parsed = orjson.loads(body) if kind.startswith("application/json") else body
            return response.status, parsed, dict(response.headers)

        return self.loop.run_until_complete(fetch())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server(make_config())
    yield s
    s.close()


@pytest.fixture(scope="module")
def counts_server() -> Iterator[Server]:
    s = Server(make_config("counts"))
    yield s
    s.close()


def numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def revenue_of(rep: str) -> float:
    return float(next(r for name, _, r in REPS if name == rep))


# -- the matrix -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ENDPOINTS)
def test_without_a_token_only_ready_answers(server: Server, path: str) -> None:
    status, body, headers = server.get(path, as_of=AS_OF)
    if path == "/ready":
        assert status == 200
    else:
        assert status == 401, body
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert "revenue" not in str(body)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("kind", ["wrong", "revoked"])
@pytest.mark.parametrize("audience", sorted(GRANTS))
def test_wrong_and_revoked_tokens_are_401(server: Server, path: str, kind: str,
                                          audience: str) -> None:
    token = new_token() if kind == "wrong" else TOKENS.revoked[audience]
    status, body, _ = server.get(path, token, as_of=AS_OF)
    assert status == (200 if path == "/ready" else 401), body
    if path != "/ready":
        assert body == {"error": "unknown token" if kind == "wrong"
                        else "this token has been revoked"}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("audience", sorted(GRANTS))
def test_right_tokens_get_their_endpoints_and_403_elsewhere(server: Server, path: str,
                                                            audience: str) -> None:
    status, body, headers = server.get(path, TOKENS.right[audience], as_of=AS_OF)
    if path in ALLOWED[audience]:
        assert status == 200, body
    else:
        assert status == 403, body
        assert set(body) == {"error"}
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in headers
    assert "Strict-Transport-Security" not in headers  # plain HTTP: HSTS would be ignored


# -- what an allowed body holds -----------------------------------------------------------------

def report(server: Server, audience: str) -> dict:
    status, body, _ = server.get("/api/kpis", TOKENS.right[audience], as_of=AS_OF)
    assert status == 200
    return body


def test_the_executive_sees_everything_as_computed(server: Server) -> None:
    body = report(server, "executive")
    day = next(w for w in body["windows"] if w["period"] == "day" and w["offset"] == 0)
    assert set(day["teams"]) == {"dach", "nordics"}
    assert {r: d["kpis"]["revenue_won"] for r, d in day["reps"].items()} == \
        {rep: float(revenue) for rep, _, revenue in REPS}


def test_a_manager_sees_the_company_own_teams_and_their_reps_only(server: Server) -> None:
    body = report(server, "manager")
    for window in body["windows"]:
        assert set(window["teams"]) <= {"dach"}
        assert set(window["reps"]) <= {"r1", "r2"}
        assert "revenue_won" in window["company"]["kpis"]
    day = next(w for w in body["windows"] if w["period"] == "day" and w["offset"] == 0)
    assert set(day["reps"]) == {"r1", "r2"}
    assert day["teams"]["dach"]["kpis"]["revenue_won"] == 1_111 + 20_202
    assert revenue_of("r3") not in set(numbers(body))


def test_a_rep_sees_own_numbers_team_and_company_but_no_other_reps_revenue(
        server: Server) -> None:
    body = report(server, "rep")
    day = next(w for w in body["windows"] if w["period"] == "day" and w["offset"] == 0)
    assert set(day["reps"]) == {"r1"}
    assert set(day["teams"]) == {"dach"}
    assert day["reps"]["r1"]["kpis"]["revenue_won"] == 1_111
    found = set(numbers(body))
    assert revenue_of("r2") not in found and revenue_of("r3") not in found


def test_with_the_counts_policy_a_rep_sees_other_reps_counts_never_money(
        counts_server: Server) -> None:
    body = report(counts_server, "rep")
    day = next(w for w in body["windows"] if w["period"] == "day" and w["offset"] == 0)
    assert set(day["reps"]) == {"r1", "r2", "r3"}
    for rep in ("r2", "r3"):
        assert set(day["reps"][rep]["kpis"]) <= COUNT_KPIS
        assert day["reps"][rep]["kpis"]["deals_won"] == 1
        assert day["reps"][rep]["targets"] == {}
    found = set(numbers(body))
    assert revenue_of("r2") not in found and revenue_of("r3") not in found


def test_the_wallboard_gets_the_tv_view_only(server: Server) -> None:
    body = report(server, "wallboard")
    assert {(w["period"], w["offset"]) for w in body["windows"]} == WALLBOARD_WINDOWS
    for window in body["windows"]:
        assert set(window["company"]["kpis"]) <= WALLBOARD_KPIS
        for doc in window["teams"].values():
            assert set(doc["kpis"]) <= WALLBOARD_KPIS
        for doc in window["reps"].values():
            assert set(doc["kpis"]) <= WALLBOARD_REP_KPIS


@pytest.mark.parametrize("audience", ["manager", "rep"])
def test_live_is_cut_to_the_scope_and_refuses_foreign_teams(server: Server,
                                                            audience: str) -> None:
    token = TOKENS.right[audience]
    status, body, _ = server.get("/api/live", token, as_of=AS_OF)
    assert status == 200
    assert set(body["reps_by_team"]) <= {"dach"}
    assert "r3" not in str(body["reps_by_team"])
    status, body, _ = server.get("/api/live", token, as_of=AS_OF, team="nordics")
    assert status == 403, body
    status, _, _ = server.get("/api/live", token, as_of=AS_OF, team="dach")
    assert status == 200


def test_a_kiosk_link_carries_a_wallboard_token_and_only_that(server: Server) -> None:
    status, page, headers = server.get("/wallboard", token=TOKENS.right["wallboard"])
    assert status == 200 and b"<html" in page
    csp = headers["Content-Security-Policy"]
    assert "script-src 'sha256-" in csp
    connect = re.search(r"connect-src ([^;]*);", csp).group(1).split()
    # a worker on loopback allows the page this machine's Prometheus, nothing external
    assert connect == ["'self'", "http://127.0.0.1:*", "http://localhost:*"]
    assert headers["Referrer-Policy"] == "no-referrer"
    # an executive token in a URL would end up in browser histories and proxy logs
    status, _, _ = server.get("/wallboard", token=TOKENS.right["executive"])
    assert status == 401
    # the URL token opens the page only, never the data
    status, _, _ = server.get("/api/kpis", token=TOKENS.right["wallboard"])
    assert status == 401
    status, _, _ = server.get("/wallboard", token=TOKENS.revoked["wallboard"])
    assert status == 401


# -- Faust's own pages, methods, bad input --------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/router/", "/router/topics", "/table/",
                                  "/table/ledger/", "/graph/", "/stats/", "/performance/",
                                  "/metrics/extra", "/api", "/api/kpis/"])
def test_faust_pages_and_unknown_paths_are_404_for_everyone(server: Server, path: str) -> None:
    for token in (None, TOKENS.right["executive"]):
        status, _, _ = server.get(path, token)
        assert status == 404


@pytest.mark.parametrize("path", ["/api/kpis", "/api/events", "/api/live"])
@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                                   "0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59+14:00",
                                   "1899-12-31T23:59:59Z", "2026-13-01T00:00:00Z", "\x00"])
def test_extreme_as_of_is_400_not_500(server: Server, path: str, as_of: str) -> None:
    status, body, _ = server.get(path, TOKENS.right["executive"], as_of=as_of)
    assert status == 400, body
    assert "error" in body


@pytest.mark.parametrize("size", [2_100, 20_000, 200_000])
def test_huge_query_strings_are_400(server: Server, size: int) -> None:
    status, _, _ = server.get("/api/kpis", TOKENS.right["executive"], team="x" * size)
    assert status in (400, 414)


# -- configuration --------------------------------------------------------------------------------

def test_the_engine_refuses_to_listen_beyond_loopback_without_tokens() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "worker-1"):
        with pytest.raises(ConfigError, match="beyond this machine"):
            config_from_mapping({"worker": {"web_host": host}})
        open_config = replace(Config(), worker=WorkerConfig(web_host=host))
        with pytest.raises(ConfigError, match="beyond this machine"):
            create_app(open_config)
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert config_from_mapping({"worker": {"web_host": host}}).worker.web_host == host
    line = TOKENS.lines[0]
    config = config_from_mapping({"worker": {"web_host": "0.0.0.0"}},
                                 {"KPI_AUTH_TOKENS": f"{line};{TOKENS.lines[1]}"})
    assert config.auth.tokens == TOKENS.lines[:2]


def test_without_tokens_on_loopback_everything_is_open_as_before() -> None:
    s = Server(make_config(lines=()))
    try:
        for path in ENDPOINTS:
            status, _, _ = s.get(path, as_of=AS_OF)
            assert status == 200, path
        status, _, _ = s.get("/router/")
        assert status == 404
    finally:
        s.close()


@pytest.mark.parametrize("line, message", [
    ("sha256=abc audience=rep rep=r1", "64 hex"),
    (f"sha256={'a' * 64} audience=boss", "audience must be"),
    (f"sha256={'a' * 64} audience=manager", "needs teams"),
    (f"sha256={'a' * 64} audience=rep", "needs rep"),
    (f"sha256={'a' * 64} audience=rep rep=r1 teams=x", "teams= applies"),
    (f"sha256={'a' * 64} audience=executive colour=red", "unknown key"),
    ("kpi_sometoken", "expected key=value"),
])
def test_bad_token_lines_are_configuration_errors_naming_the_problem(line: str,
                                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({"auth": {"tokens": [line]}})
    # never the token: the error names the line and the problem only
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"auth": {"tokens": [line]}})
    assert "kpi_sometoken" not in str(info.value) or "expected key=value" in str(info.value)


def test_faust_environment_variables_do_not_override_the_engine(monkeypatch) -> None:
    # Faust reads these itself and, before the fix, let them win over create_app's arguments:
    # the web server then listened on all interfaces with the raw table pages on.
    for name, value in {"WEB_BIND": "0.0.0.0", "WEB_PORT": "7777", "APP_DEBUG": "true",
                        "APP_WEB_TABLES_ENABLED": "true", "APP_WEB_ROUTER_ENABLED": "true",
                        "APP_WEB_STATS_ENABLED": "true", "WEB_TRANSPORT": "unix:///tmp/x",
                        "APP_DATADIR": "/tmp/elsewhere"}.items():
        monkeypatch.setenv(name, value)
    config = make_config()
    conf = create_app(config).conf
    assert conf.web_bind == "127.0.0.1" and conf.web_port == 6066
    assert not conf.debug
    assert not (conf.web_tables_enabled or conf.web_router_enabled or conf.web_stats_enabled)
    assert conf.web_transport.scheme == "tcp"
    assert str(conf.datadir) != "/tmp/elsewhere"


# -- fuzzing the query parsing of every handler -------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_instants = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                         timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=14)),
                                                    timezone(timedelta(hours=-12))]))
_values = st.one_of(
    st.text(max_size=40),
    _instants.map(lambda d: d.isoformat()),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["", " ", "0", "1440", "1441", "nan", "1e3", "dach", "nordics", "r1",
                     "%00", "\udcff".encode("utf-8", "surrogatepass").decode("latin-1")]),
)
_queries = st.dictionaries(st.sampled_from(["as_of", "minutes", "team", "token", "x", ""]),
                           _values, max_size=4)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(ENDPOINTS), audience=st.sampled_from(["executive", "rep", "manager"]),
       query=_queries)
def test_no_query_makes_a_handler_fail(server: Server, path: str, audience: str,
                                       query: dict[str, str]) -> None:
    status, body, _ = server.get(path, TOKENS.right[audience], **query)
    assert status in (200, 400, 403), (status, body)
    if status == 400:
        assert set(body) == {"error"}


def test_the_page_may_query_only_the_prometheus_the_server_names() -> None:
    from streams.wallboard import page_csp

    html = "<script>run()</script>"
    csp = page_csp(html, "https://prom.internal:9090/", loopback=False)
    assert "connect-src 'self' https://prom.internal:9090;" in csp
    assert "connect-src 'self';" in page_csp(html, None, loopback=False)
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
