"""The wallboard in a real browser: headless Chromium, driven over the DevTools protocol, shows
a real ``kpi-engine worker`` fed by ``kpi-engine generate`` through the real Kafka broker.

What a person in front of the screen would check: the numbers shown equal ``/api/kpis`` (and
``/api/live``) at the page's own ``as_of``; they move when events arrive, without a reload; the
board turns visibly stale when events stop; the team filter, the rotation and the Prometheus
mode show the right scope; reps and teams appear by their roster names (``[people] roster``),
by their id where the roster has none. Screenshots at 1920x1080 and 1280x720 land in the
test's tmp dir, and in ``$KPI_WALLBOARD_SCREENSHOTS`` (e.g. ``docs``) when that is set.

Needs Debian's ``chromium`` (``apt-get install chromium``); skipped without it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.kafka_local import free_port
from pipeline_traffic import pipeline_events, stages_toml, write_events
from prometheus_server import Prometheus, require_binary
from web_access import WebAccess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RULES = ROOT / "prometheus" / "rules" / "kpi_recording.yml"
SCREENSHOTS_ENV = "KPI_WALLBOARD_SCREENSHOTS"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--force-color-profile=srgb", "--mute-audio")
WAIT_SECONDS = 180.0  # the shared test machine can be slow
TEAMS, REPS_PER_TEAM = 3, 4
STALE_SECONDS = 20
# The roster names half the generated reps and one team: the others must show their ids.
ROSTER_REPS = {f"rep-{n:03d}": name for n, name in enumerate(
    ["Anna Schmidt", "Jonas Weber", "Søren Ødegaard", "Élodie Martin", "Pieter de Vries",
     "Maja Lindqvist"], start=1)}
ROSTER_TEAMS = {"dach": "DACH Region"}
# The month's company target is set high enough that the pace marker sits inside the bar.
# Nordics' month target is out of reach, so that team's board is behind pace.
TARGETS = {("month", None): 2_400_000, ("day", None): 40_000, ("month", "dach"): 200_000,
           ("month", "nordics"): 60_000_000}


# -- a small DevTools-protocol client -------------------------------------------------------------

class Browser:
    """Headless Chromium with a DevTools websocket, driven from synchronous test code.

    The websocket lives on an event loop in a background thread; :meth:`call` sends one
    command and waits for its answer. JavaScript exceptions on any page are collected.
    """

    def __init__(self, workdir: Path, flags: tuple[str, ...] = ()) -> None:
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True)
        self.log = open(workdir / "chromium.log", "wb")
        self.process = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--window-size=1920,1080", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port; see chromium.log")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._run(self._connect(f"ws://127.0.0.1:{port}{path}"))

    def _run(self, coro: Any, timeout: float = 90.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            future = self._pending.pop(data.get("id"), None)
            if future is not None:
                if "error" in data:
                    future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description")
                                   or details.get("text", "?"))

    async def _send(self, method: str, params: dict, session_id: str | None) -> dict:
        message_id = next(self._ids)
        future = self.loop.create_future()
        self._pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, 60)

    def call(self, method: str, session_id: str | None = None, **params: Any) -> dict:
        return self._run(self._send(method, params, session_id))

    def new_page(self, width: int = 1920, height: int = 1080) -> Page:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, target, session)
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.resize(width, height)
        return page

    def close(self) -> None:
        async def shut() -> None:
            await self.ws.close()
            await self.session.close()
            self.reader.cancel()
        try:
            self._run(shut(), timeout=10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


class Page:
    """One tab."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session

    def call(self, method: str, **params: Any) -> dict:
        return self.browser.call(method, self.session, **params)

    def resize(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'",
                      "the page to load")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = WAIT_SECONDS) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.browser.call("Target.closeTarget", targetId=self.target)


# What the page shows, read from the DOM: every data-kpi element (its raw value and its text),
# the leaderboard rows, and the page state.
READ_BOARD = """(() => {
  const kpis = {};
  for (const el of document.querySelectorAll('[data-kpi]')) {
    if (el.closest('#leaderboard')) continue;
    kpis[el.dataset.kpi] = {value: el.dataset.value, text: el.textContent.trim()};
  }
  const board = [...document.querySelectorAll('#leaderboard li[data-rep]')].map((li) => {
    const revenue = li.querySelector('[data-kpi="rep.revenue_won"]');
    const deals = li.querySelector('[data-kpi="rep.deals_won"]');
    return {rep: li.dataset.rep, name: li.querySelector('.rep').textContent,
            revenue: revenue.dataset.value, revenueText: revenue.textContent,
            deals: deals.dataset.value, dealsText: deals.textContent};
  });
  const banner = document.getElementById('banner');
  return {asOf: document.body.dataset.asOf || null, state: document.body.dataset.state,
          scope: document.body.dataset.scope, updates: Number(document.body.dataset.updates || 0),
          stale: document.body.classList.contains('stale'), bannerVisible: !banner.hidden,
          bannerText: banner.textContent.trim(),
          boardOpacity: Number(getComputedStyle(document.querySelector('.board')).opacity),
          source: document.getElementById('source').textContent,
          kpis, board};
})()"""


# -- the worker, the traffic and Prometheus -----------------------------------------------------

class Worker:
    """``kpi-engine worker`` in a subprocess, with its HTTP endpoints."""

    def __init__(self, config_path: Path, log_path: Path, port: int,
                 web: WebAccess | None = None) -> None:
        # ``web``: the tokens and TLS its configuration has (tests/web_access.py); open if None
        self.web = web or WebAccess()
        self.base = self.web.base(port)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "worker", "--config", str(config_path),
                 "--log-level", "info"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def get_json(self, path: str, **query: str) -> dict:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        return self.web.get_json(url)

    def until(self, condition: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}) while waiting "
                                     f"for {what}; log:\n{self.log_tail()}")
            try:
                value = condition()
                if value:
                    return value
            except (OSError, AssertionError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.log_tail()}")

    def counted(self) -> int:
        return self.get_json("/api/kpis")["events"]["counted"]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def generate(config_path: Path, *args: str) -> subprocess.Popen:
    """``kpi-engine generate --kafka`` with the test's teams, in a subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "generate", "--config", str(config_path), "--kafka",
         "--teams", str(TEAMS), "--reps-per-team", str(REPS_PER_TEAM), *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def sent_count(process: subprocess.Popen) -> int:
    output = process.communicate(timeout=WAIT_SECONDS)[0].decode()
    assert process.returncode == 0, output
    return int(re.search(r"sent (\d+) messages", output).group(1))


@pytest.fixture(scope="module")
def stack(kafka_broker, tmp_path_factory, web_access) -> Iterator[dict]:
    """A worker on fresh topics, fed with 90 days of history and a few seconds of live events."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    workdir = tmp_path_factory.mktemp("wallboard")
    token = uuid.uuid4().hex[:8]
    port = free_port()
    targets = "\n".join(
        f'[[targets]]\nkpi = "revenue_won"\nperiod = "{period}"\nvalue = {value}\n'
        + (f'team = "{team}"\n' if team else "")
        for (period, team), value in TARGETS.items())
    config_path = workdir / "worker.toml"
    roster = workdir / "roster.csv"
    roster.write_text("rep_id,team_id,name,team_name\n" + "".join(
        f"{rep},dach,{name},{ROSTER_TEAMS['dach']}\n" for rep, name in ROSTER_REPS.items()),
        encoding="utf-8")
    config_path.write_text(f"""
[people]
roster = "{roster}"
[calendar]
timezone = "Europe/Berlin"
[money]
currency = "EUR"
[kafka]
bootstrap_servers = "{kafka_broker.bootstrap}"
[topics]
input = "wallboard-in-{token}"
dead_letter = "wallboard-dlq-{token}"
partitions = 3
[worker]
app_id = "wallboard-{token}"
data_dir = "{workdir / 'data'}"
web_host = "127.0.0.1"
web_port = {port}
{stages_toml()}
{targets}
{web_access.config_toml()}""")
    worker = Worker(config_path, workdir / "worker.log", port, web_access)
    browser = None
    try:
        worker.until(lambda: worker.get_json("/ready")["ready"], "the worker to be ready")
        history = sent_count(generate(config_path, "--days", "90", "--seed", "7"))
        live = sent_count(generate(config_path, "--rate", "25", "--duration", "5", "--seed", "8",
                                  "--id-prefix", "live1-"))
        worker.until(lambda: worker.counted() == history + live, "every event to be counted")
        # A living pipeline: the teams' reps move deals through the configured stages.
        pairs = [(team, rep) for team, reps in worker.get_json("/api/live")["reps_by_team"].items()
                 for rep in reps]
        events = write_events(workdir / "pipeline.jsonl",
                              pipeline_events(pairs, datetime.now(timezone.utc), hours=8))
        live += sent_count(subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "produce", str(events), "--config",
             str(config_path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT))
        worker.until(lambda: worker.counted() == history + live, "the pipeline events")
        worker.web.assert_enforced(worker.base)
        browser = Browser(workdir, web_access.chromium_flags())
        yield {"worker": worker, "browser": browser, "config": config_path, "workdir": workdir,
               "counted": history + live}
        assert not browser.errors, browser.errors
    finally:
        if browser is not None:
            browser.close()
        worker.stop()


# -- comparing the page with the API ----------------------------------------------------------------

def expected_numbers(report: dict, live: dict, team: str | None = None) -> dict[str, Any]:
    """The ``data-kpi`` values the page must show for ``team`` (None: company)."""
    windows = {(w["period"], w["offset"]): w for w in report["windows"]}

    def scope(period: str, offset: int) -> dict:
        w = windows[(period, offset)]
        return w["teams"][team] if team else w["company"]

    counts = ("revenue_won", "deals_won", "leads_qualified", "activities")
    rates = ("win_rate", "lead_conversion_rate")
    out: dict[str, Any] = {}
    for prefix, (period, offset), names in (("day", ("day", 0), counts),
                                            ("month", ("month", 0), counts + rates),
                                            ("prev_month", ("month", 1), rates)):
        kpis = scope(period, offset)["kpis"]
        for name in names:
            out[f"{prefix}.{name}"] = kpis[name]
    for period in ("day", "month"):
        target = scope(period, 0)["targets"].get("revenue_won") or {}
        for name in ("attainment", "pace", "expected"):
            out[f"{period}.revenue_won.{name}"] = target.get(name)
    month = scope("month", 0)
    for name in ("commit", "best_case", "weighted"):
        out[f"forecast.{name}"] = month["kpis"][f"forecast_{name}"]
    out["forecast.attainment"] = (month["targets"].get("revenue_won") or {}).get(
        "forecast_attainment")
    for kind, n in live["activities"]["by_type"].items():
        out[f"live.{kind}"] = n
    out["live.total"] = live["activities"]["total"]
    return out


def expected_leaderboard(report: dict, live: dict, team: str | None, top: int = 10) -> list:
    month = next(w for w in report["windows"] if w["period"] == "month" and w["offset"] == 0)
    members = set(live["reps_by_team"].get(team, [])) if team else None
    rows = [(rep, doc["kpis"]["revenue_won"], doc["kpis"]["deals_won"])
            for rep, doc in month["reps"].items() if members is None or rep in members]
    rows.sort(key=lambda r: (-r[1], -r[2], r[0]))
    return rows[:top]


def _digits(text: str) -> int:
    return int(re.sub(r"[^0-9]", "", text))


def check_text(name: str, value: Any, text: str) -> None:
    """The shown text (``lang=en-US``) is the value, formatted: money, count or percent."""
    if value is None:
        assert text in ("–", "no target set"), (name, text)
    elif name == "forecast.attainment":
        shown = float(re.search(r"(-?[\d,]+\.\d)%", text).group(1).replace(",", ""))
        assert abs(shown - value * 100) <= 0.05 + 1e-6 and "target" in text, (name, value, text)
    elif name.endswith(("rate", "attainment")):
        shown = float(re.search(r"(-?[\d,]+\.\d)%", text).group(1).replace(",", ""))
        assert abs(shown - value * 100) <= 0.05 + 1e-6, (name, value, text)
    elif name.endswith(("revenue_won", ".expected")) or name.startswith("forecast."):
        assert "€" in text, (name, text)
        assert _digits(text) == math.floor(value + 0.5), (name, value, text)
    else:
        assert _digits(text) == value, (name, value, text)


VERDICT_WORDS = {"reached": "✓ target reached", "on-pace": "▲ on pace", "behind": "▼ behind",
                 "none": ""}


def expected_verdict(attainment: float | None, pace: float | None) -> str:
    """docs/wallboard.md: reached at 100 % of the target, else on pace when the KPI is at or
    past where the target should be by now (pace ≥ 1), behind below; none without a pace."""
    if attainment is not None and attainment >= 1:
        return "reached"
    if pace is None:
        return "none"
    return "on-pace" if pace >= 1 else "behind"


def mismatches(shown: dict, report: dict, live: dict, team: str | None) -> list[str]:
    expected = expected_numbers(report, live, team)
    unchecked = set(shown["kpis"]) - set(expected) - {"scope", "freshness.seconds", "source"}
    problems = [f"{name}: shown but not checked" for name in sorted(unchecked)]
    for name, want in expected.items():
        got = shown["kpis"].get(name)
        if got is None:
            problems.append(f"{name}: not on the page")
            continue
        raw = None if got["value"] == "null" else float(got["value"])
        if (raw is None) != (want is None) or (
                want is not None and not math.isclose(raw, want, rel_tol=1e-6, abs_tol=1e-9)):
            problems.append(f"{name}: page {got['value']} ({got['text']}), API {want}")
            continue
        if name.endswith(".pace"):  # the verdict, in words
            period = name.split(".")[0]
            words = VERDICT_WORDS[expected_verdict(
                expected[f"{period}.revenue_won.attainment"], want)]
            if got["text"] != words:
                problems.append(f"{name}: page says {got['text']!r}, pace {want}: {words!r}")
            continue
        try:
            check_text(name, want, got["text"])
        except AssertionError as exc:
            problems.append(f"{name}: shown as {got['text']!r} ({exc})")
    board = [(r["rep"], float(r["revenue"]), int(r["deals"])) for r in shown["board"]]
    want_board = expected_leaderboard(report, live, team)
    if board != want_board:
        problems.append(f"leaderboard: page {board}, API {want_board}")
    for row in shown["board"]:
        if row["name"] != ROSTER_REPS.get(row["rep"], row["rep"]):
            problems.append(f"leaderboard: {row['rep']} shown as {row['name']!r}")
        check_text("rep.revenue_won", float(row["revenue"]), row["revenueText"])
        check_text("rep.deals_won", int(row["deals"]), row["dealsText"])
    return problems


def page_matches_api(page: Page, worker: Worker, team: str | None = None,
                     tries: int = 40) -> dict:
    """Read the page, then ask the API at the page's own as_of; retry while events settle."""
    problems: list[str] = []
    for _ in range(tries):
        shown = page.evaluate(READ_BOARD)
        if shown["asOf"]:
            query = {"as_of": shown["asOf"], "minutes": "60"}
            report = worker.get_json("/api/kpis", as_of=shown["asOf"])
            live = worker.get_json("/api/live", **query, **({"team": team} if team else {}))
            problems = mismatches(shown, report, live, team)
            if not problems:
                return shown
        time.sleep(0.5)
    raise AssertionError("the page does not show the API's numbers:\n" + "\n".join(problems))


def save_screenshot(page: Page, width: int, height: int, tmp_dir: Path) -> Path:
    page.resize(width, height)
    time.sleep(1.5)  # layout, and the bars' CSS transitions
    name = f"wallboard-{width}x{height}.png"
    path = page.screenshot(tmp_dir / name)
    assert path.stat().st_size > 10_000
    target = os.environ.get(SCREENSHOTS_ENV)
    if target:
        directory = Path(target) if Path(target).is_absolute() else ROOT / target
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, directory / name)
    return path


# -- the tests ----------------------------------------------------------------------------------------

def test_the_wallboard_shows_the_api_numbers_updates_live_and_turns_stale(stack: dict) -> None:
    worker, browser = stack["worker"], stack["browser"]
    page = browser.new_page(1920, 1080)
    page.open(worker.web.kiosk_link(worker.base, lang="en-US", refresh="1",
                                    stale=str(STALE_SECONDS)))
    page.wait_for("document.body.dataset.state === 'ok'", "the first data")

    shown = page_matches_api(page, worker)
    assert shown["scope"] == "company"
    assert not shown["stale"] and not shown["bannerVisible"]
    assert shown["kpis"]["freshness.seconds"]["text"].startswith("Last event")
    assert "worker 127.0.0.1" in shown["source"] and "3 of 3 partitions" in shown["source"]
    assert shown["kpis"]["month.revenue_won"]["value"] != "0"
    assert len(shown["board"]) == 10
    # Names from the roster, ids for the reps it does not list (mismatches() checks each row).
    assert {row["rep"] for row in shown["board"]} & set(ROSTER_REPS)
    assert {row["rep"] for row in shown["board"]} - set(ROSTER_REPS)

    # More events: the numbers move without a reload.
    page.evaluate("window.__notReloaded = true")
    before = shown["kpis"]["day.activities"]["value"]
    updates = shown["updates"]
    trickle = generate(stack["config"], "--rate", "25", "--duration", "6", "--seed", "9",
                       "--id-prefix", "live2-")
    page.wait_for(f"document.querySelector('[data-kpi=\"day.activities\"]').dataset.value "
                  f"!== '{before}'", "today's activities to change on the page")
    more = sent_count(trickle)
    worker.until(lambda: worker.counted() == stack["counted"] + more, "the new events")
    stack["counted"] += more
    shown = page_matches_api(page, worker)
    assert float(shown["kpis"]["day.activities"]["value"]) > float(before)
    assert shown["updates"] > updates
    assert page.evaluate("window.__notReloaded === true")
    assert not shown["stale"]

    # Pace: the marker sits where the target should be by now (the engine's expected), and
    # the verdict is in words and in colour.
    bar = page.evaluate("""(() => {
      const box = document.querySelector('[data-target="month"]');
      const marker = box.querySelector('.pace').getBoundingClientRect();
      const track = box.querySelector('.bar').getBoundingClientRect();
      return {share: Number(box.querySelector('.pace').dataset.share),
              centre: (marker.left + marker.width / 2 - track.left) / track.width,
              state: box.dataset.state,
              fill: getComputedStyle(box.querySelector('.fill')).backgroundColor,
              word: getComputedStyle(box.querySelector('.verdict')).backgroundColor,
              asOf: document.body.dataset.asOf};
    })()""")
    # The page refreshes every second and the expected value moves with as_of: compare with
    # the report at the as_of of the render the marker belongs to (read in the same evaluate).
    report = worker.get_json("/api/kpis", as_of=bar["asOf"])
    month = next(w for w in report["windows"] if w["period"] == "month" and w["offset"] == 0)
    target = month["company"]["targets"]["revenue_won"]
    assert math.isclose(bar["share"], target["expected"] / target["target"], rel_tol=1e-9)
    assert abs(bar["centre"] - target["expected"] / target["target"]) < 0.01, bar
    assert bar["state"] == expected_verdict(target["attainment"], target["pace"])
    assert 0 < target["expected"] / target["target"] < 1
    # A living pipeline: the forecast adds the due open deals to what is won, and it is shown
    # (the panel hides only when no stages are configured).
    assert page.evaluate("getComputedStyle(document.getElementById('forecast')).display") != "none"
    assert month["company"]["kpis"]["forecast_best_case"] > month["company"]["kpis"][
        "forecast_commit"] > month["company"]["kpis"]["revenue_won"]
    day = page.evaluate("""(() => {
      const box = document.querySelector('[data-target="day"]');
      return {state: box.dataset.state,
              fill: getComputedStyle(box.querySelector('.fill')).backgroundColor};
    })()""")
    if {day["state"], bar["state"]} == {"on-pace", "behind"}:
        assert day["fill"] != bar["fill"], "on pace and behind look the same"

    tmp_dir = stack["workdir"]
    for width, height in ((1920, 1080), (1280, 720)):
        save_screenshot(page, width, height, tmp_dir)
        # The same board, scaled: every leaderboard row still fits.
        assert len(page.evaluate(READ_BOARD)["board"]) == 10, (width, height)
    shown = page.evaluate(READ_BOARD)
    assert not shown["stale"], "the screenshots must show the live state"

    # No more events: after `stale` seconds the board says so, and the numbers dim.
    page.resize(1920, 1080)
    page.wait_for("document.body.classList.contains('stale')", "the stale state",
                  timeout=STALE_SECONDS + 30)
    shown = page.evaluate(READ_BOARD)
    assert shown["bannerVisible"] and "NO NEW EVENTS" in shown["bannerText"]
    assert shown["state"] == "stale"
    time.sleep(1)  # the dimming transition
    assert page.evaluate("Number(getComputedStyle(document.querySelector('.board')).opacity)") < 0.5
    assert float(shown["kpis"]["freshness.seconds"]["value"]) >= STALE_SECONDS
    page.screenshot(tmp_dir / "wallboard-stale-1920x1080.png")
    page_matches_api(page, worker)  # stale is a warning: the numbers are still the API's
    page.close()


def test_team_filter_and_rotation(stack: dict) -> None:
    worker, browser = stack["worker"], stack["browser"]
    report = worker.get_json("/api/kpis")
    teams = sorted(report["windows"][0]["teams"])
    assert teams == ["benelux", "dach", "nordics"]

    page = browser.new_page(1920, 1080)
    page.open(worker.web.kiosk_link(worker.base, team="dach", lang="en-US", refresh="1",
                                    stale="100000"))
    page.wait_for("document.body.dataset.asOf", "the first data")
    shown = page_matches_api(page, worker, team="dach")
    assert shown["scope"] == "team:dach"
    assert shown["kpis"]["scope"]["text"] == "Team DACH Region"  # the roster's team name
    assert shown["kpis"]["month.revenue_won.attainment"]["value"] != "null"  # dach's own target
    assert shown["kpis"]["day.revenue_won.attainment"]["value"] == "null"  # none for its days
    page.screenshot(stack["workdir"] / "wallboard-team-dach.png")

    # Behind pace: said in words, and drawn in another colour than on pace or reached.
    page.open(worker.web.kiosk_link(worker.base, team="nordics", lang="en-US", refresh="1",
                                    stale="100000"))
    page.wait_for("document.body.dataset.asOf", "the first data")
    shown = page_matches_api(page, worker, team="nordics")  # checks the verdict's words too
    pace = float(shown["kpis"]["month.revenue_won.pace"]["value"])
    if pace < 1:  # not in a month's first minutes, when almost nothing is expected yet
        assert shown["kpis"]["month.revenue_won.pace"]["text"] == "▼ behind"
        colours = page.evaluate("""(() => {
          const box = document.querySelector('[data-target="month"]');
          return {state: box.dataset.state,
                  fill: getComputedStyle(box.querySelector('.fill')).backgroundColor,
                  word: getComputedStyle(box.querySelector('.verdict')).backgroundColor,
                  good: getComputedStyle(document.documentElement).getPropertyValue('--good')};
        })()""")
        assert colours["state"] == "behind"
        assert colours["fill"] == colours["word"] != "rgb(61, 220, 132)", colours  # not --good
    page.screenshot(stack["workdir"] / "wallboard-team-nordics.png")

    page.open(worker.web.kiosk_link(worker.base, rotate="2", lang="en-US", refresh="1",
                                    stale="100000"))
    seen: list[str] = []
    deadline = time.monotonic() + 2 * (len(teams) + 1) * 2 + 20
    while len(seen) < len(teams) + 2 and time.monotonic() < deadline:
        scope = page.evaluate("document.body.dataset.scope || ''")
        if scope and (not seen or seen[-1] != scope):
            seen.append(scope)
        time.sleep(0.2)
    assert seen[:len(teams) + 2] == ["company", *(f"team:{t}" for t in teams), "company"], seen
    page.close()


def test_prometheus_mode_shows_the_numbers_summed_by_the_recording_rules(stack: dict) -> None:
    require_binary()
    worker, browser = stack["worker"], stack["browser"]
    workdir = stack["workdir"] / "prometheus"
    workdir.mkdir()
    # Scrapes every second, as often as the board refreshes here (refresh=1 below).
    with Prometheus(workdir, [worker.base.split("://", 1)[1]], [RULES],
                    scrape_interval="1s", ready_timeout=WAIT_SECONDS,
                    scrape=worker.web.scrape_config()) as prometheus:
        worker.until(lambda: prometheus.query("kpi:revenue_won")
                     and prometheus.query("kpi_activities_last_hour")
                     and prometheus.query("kpi_last_counted_timestamp_seconds"),
                     "Prometheus to record the KPIs")
        page = browser.new_page(1920, 1080)
        query = {"source": "prometheus", "prom": prometheus.url, "lang": "en-US",
                 "refresh": "1", "stale": "100000"}
        page.open(worker.web.kiosk_link(worker.base, **query))
        page.wait_for("document.body.dataset.asOf", "the first data from Prometheus")
        shown = page_matches_api(page, worker)
        assert shown["state"] == "ok"
        assert page.evaluate("document.body.dataset.source") == "prometheus"
        assert f"Prometheus {prometheus.url}" in shown["source"] and "1 worker" in shown["source"]
        assert shown["kpis"]["freshness.seconds"]["text"].startswith("Last event")
        page.screenshot(stack["workdir"] / "wallboard-prometheus.png")

        page.open(worker.web.kiosk_link(worker.base, **query, team="nordics"))
        page.wait_for("document.body.dataset.asOf", "the team's data from Prometheus")
        shown = page_matches_api(page, worker, team="nordics")  # names from kpi_rep_info
        assert shown["kpis"]["scope"]["text"] == "Team nordics"  # not in the roster: the id
        page.close()
