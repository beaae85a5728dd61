"""The wallboard in a real browser with authentication on: a kiosk link is all a TV needs.

The server is Faust's own web server (the app's TCP site) with the access middleware and the
real views over hand-built cores; the browser is headless Chromium, driven as in
``test_wallboard_browser.py``. Checked: the page opened with ``?token=<wallboard token>``
shows exactly the numbers the API gives that token (so the page sends it to the APIs, and its
Content-Security-Policy lets its own script run); without the token there is no page; with a
revoked token, no numbers.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from test_wallboard_browser import CHROMIUM, READ_BOARD, Browser, mismatches

from engine.calendar import to_micros
from engine.config import AuthConfig, CalendarConfig, Config, MoneyConfig, WorkerConfig
from engine.core import Core
from engine.event import MICRO, Event
from engine.kafka_local import free_port
from engine.security.tokens import TokenEntry, format_token_line, new_token, token_hash
from streams.app import create_app
from streams.metrics import WorkerMetrics
from streams.views import register_views
from static_cores import StaticCores

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]


def _core(config: Config) -> Core:
    core = Core(config.calendar)
    now = datetime.now(timezone.utc)
    for i, (team, rep, amount) in enumerate((("dach", "r1", 1_500), ("dach", "r2", 700),
                                             ("nordics", "r3", 2_200))):
        ts = to_micros(now - timedelta(minutes=10 + i))
        core.apply(Event(event_id=f"c{i}", type="deal.created", ts=ts - MICRO, team_id=team,
                         rep_id=rep, deal_id=f"d{i}"))
        core.apply(Event(event_id=f"w{i}", type="deal.closed", ts=ts, team_id=team, rep_id=rep,
                         deal_id=f"d{i}", outcome="won", amount=amount * MICRO,
                         customer_id=f"k{i}", opened_at=ts - MICRO))
        core.apply(Event(event_id=f"a{i}", type="activity.logged", ts=ts, team_id=team,
                         rep_id=rep, activity_type="call"))
    return core


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    kiosk, revoked = new_token(), new_token()
    lines = tuple(format_token_line(TokenEntry(sha256=token_hash(t), audience="wallboard",
                                               revoked=t is revoked)) for t in (kiosk, revoked))
    port = free_port()
    config = replace(Config(), calendar=CalendarConfig(timezone="UTC"),
                     money=MoneyConfig(currency="EUR"),
                     worker=WorkerConfig(store="memory://", web_port=port),
                     auth=AuthConfig(tokens=lines))
    app = create_app(config)
    register_views(app, config, StaticCores([_core(config)]), WorkerMetrics())
    app.web.init_server()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(app.web.start_server())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    browser = Browser(tmp_path_factory.mktemp("kiosk-browser"))
    try:
        yield {"base": f"http://127.0.0.1:{port}", "kiosk": kiosk, "revoked": revoked,
               "browser": browser}
    finally:
        browser.close()
        asyncio.run_coroutine_threadsafe(app.web.stop_server(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def _get_json(base: str, path: str, token: str, **query: str) -> dict:
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())


def test_a_kiosk_link_shows_the_numbers_its_token_may_see(served: dict) -> None:
    base, kiosk = served["base"], served["kiosk"]
    page = served["browser"].new_page(1920, 1080)
    page.open(f"{base}/wallboard?token={kiosk}&lang=en-US&refresh=1&stale=100000")
    page.wait_for("document.body.dataset.asOf", "the first data through the kiosk link")
    problems: list[str] = []
    for _ in range(20):
        shown = page.evaluate(READ_BOARD)
        report = _get_json(base, "/api/kpis", kiosk, as_of=shown["asOf"])
        live = _get_json(base, "/api/live", kiosk, as_of=shown["asOf"], minutes="60")
        problems = mismatches(shown, report, live, None)
        if not problems:
            break
        time.sleep(0.5)
    assert not problems, problems
    assert shown["state"] == "ok"
    assert [row["rep"] for row in shown["board"]] == ["r3", "r1", "r2"]
    page.close()


def test_without_a_token_or_with_a_revoked_one_the_board_gets_no_numbers(served: dict) -> None:
    base = served["base"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{base}/wallboard", timeout=30)
    assert info.value.code == 401
    page = served["browser"].new_page(1280, 720)
    page.open(f"{base}/wallboard?token={served['revoked']}")
    time.sleep(2)
    shown = page.evaluate("document.body.innerText")
    assert "1,500" not in shown and "2,200" not in shown
    page.close()
