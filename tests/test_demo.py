"""``kpi-engine demo``: the one-command newcomer demo.

The end-to-end test runs the real command in a temporary working directory (a real Kafka, a
real worker, Prometheus when installed), watches live traffic arrive through the worker's API,
then presses Ctrl-C and checks that nothing the demo started is left running. The other tests
cover the pieces the demo writes and decides without starting anything heavy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from datetime import UTC, datetime, timedelta
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from engine.cli import main
from engine.config import load_config
from engine.demo import (
    DEFAULT_BACKFILL_DAYS,
    DemoError,
    backfill_settings,
    base_config,
    choose_port,
    config_toml,
    demo_config,
    namespaced,
    prometheus_config,
    rule_files,
)
from engine.kafka_local import free_port
from engine.tooling.generator import history_lines

DEMO_TIMEOUT_SECONDS = 150.0  # the whole end-to-end test; a healthy run needs about 40 s
STOP_TIMEOUT_SECONDS = 60.0


# -- what the demo writes and decides ------------------------------------------------------------


def test_embedded_defaults_are_a_valid_config_with_a_zone_a_currency_and_targets() -> None:
    config = base_config(None)
    assert config.calendar.timezone == "Europe/Berlin"
    assert config.money.currency == "EUR"
    assert len(config.targets) >= 3
    assert any(t.team for t in config.targets) and any(t.rep for t in config.targets)


def test_embedded_defaults_have_a_realistic_pipeline_and_pipeline_targets() -> None:
    stages = base_config(None).pipeline.stages
    assert len(stages) >= 4
    probabilities = [stage.probability for stage in stages]
    assert probabilities == sorted(probabilities) and 0 < probabilities[0] < probabilities[-1] < 1
    categories = [stage.category for stage in stages]
    assert categories == sorted(categories, key=("pipeline", "best_case", "commit").index)
    assert set(categories) == {"pipeline", "best_case", "commit"}
    targeted = {t.kpi for t in base_config(None).targets}
    assert {"pipeline_weighted", "forecast_weighted", "pipeline_amount"} <= targeted


def test_the_demo_history_shows_a_living_pipeline_near_its_targets(tmp_path: Path) -> None:
    """The default backfill, reported as the demo's worker would: every stage holds open deals,
    deals move through every stage, and the pipeline targets are within reach (not 0 %, not
    ten times over)."""
    config = base_config(None)
    as_of = datetime(2026, 6, 10, 12, tzinfo=UTC)
    start = as_of - timedelta(days=DEFAULT_BACKFILL_DAYS)
    settings = backfill_settings(config, 1, start, as_of)
    events, config_file, report = (tmp_path / name for name in
                                   ("history.jsonl", "engine.toml", "report.json"))
    events.write_bytes(b"\n".join(history_lines(settings, start, as_of)) + b"\n")
    config_file.write_text(config_toml(config))
    assert main(["validate", str(events), "--config", str(config_file)]) == 0
    assert main(["report", "--events", str(events), "--config", str(config_file),
                 "--as-of", as_of.isoformat(), "--out", str(report)]) == 0
    windows = {(w["period"], w["offset"]): w for w in json.loads(report.read_text())["windows"]}
    month = windows[("month", 0)]["company"]
    stage_ids = [stage.id for stage in config.pipeline.stages]
    open_by_stage = month["kpis"]["pipeline_deals_by_stage"]
    assert all(open_by_stage[stage] > 0 for stage in stage_ids), open_by_stage
    assert open_by_stage[stage_ids[0]] > open_by_stage[stage_ids[-1]]  # a funnel
    entries = windows[("month", 1)]["company"]["kpis"]["stage_entries"]
    assert all(entries[stage] > 0 for stage in stage_ids), entries
    assert month["kpis"]["pipeline_due_amount"] > 0 and month["kpis"]["forecast_weighted"] > 0
    pipeline_kpis = {"pipeline_weighted", "forecast_weighted", "pipeline_amount",
                     "pipeline_deals"}
    checked = 0
    for target in config.targets:
        if target.kpi not in pipeline_kpis:
            continue
        window = windows[(target.period, 0)]
        scope = (window["company"] if target.team is None and target.rep is None
                 else window["teams"][target.team] if target.team else window["reps"][target.rep])
        attainment = scope["targets"][target.kpi]["attainment"]
        assert 0.3 < attainment < 3, (target, attainment)
        checked += 1
    assert checked == 5


def test_the_demo_config_file_reads_back_as_the_config_the_demo_runs(tmp_path: Path) -> None:
    config = demo_config(base_config(None), "127.0.0.1:12345", 6066, tmp_path / "worker",
                         tmp_path / "tokens")
    path = tmp_path / "engine.toml"
    path.write_text(config_toml(config))
    assert load_config(path, environ={}) == config
    assert config.kafka.bootstrap_servers == "127.0.0.1:12345"
    assert config.worker.web_port == 6066
    assert config.worker.data_dir == str(tmp_path / "worker")
    assert config.auth.tokens_file == str(tmp_path / "tokens")


def test_a_user_config_keeps_its_settings_but_gets_the_demo_broker(tmp_path: Path) -> None:
    user = tmp_path / "mine.toml"
    user.write_text('[calendar]\ntimezone = "Asia/Tokyo"\n[money]\ncurrency = "JPY"\n'
                    '[kafka]\nbootstrap_servers = "prod:9093"\nsecurity_protocol = "SSL"\n'
                    '[people]\nroster = "/srv/roster.toml"\n'
                    '[[targets]]\nkpi = "deals_won"\nperiod = "month"\nvalue = 3\n')
    config = demo_config(base_config(str(user)), "127.0.0.1:1", 7000, tmp_path / "w",
                         roster_file=tmp_path / "demo-roster.toml")
    assert not (tmp_path / "demo-roster.toml").exists()  # the user's own roster is kept
    assert (config.calendar.timezone, config.money.currency) == ("Asia/Tokyo", "JPY")
    assert [t.kpi for t in config.targets] == ["deals_won"]
    assert config.kafka.bootstrap_servers == "127.0.0.1:1"
    assert config.kafka.security_protocol == "PLAINTEXT"
    # the worker the demo starts reads the file the demo writes: the roster's names stay
    written = tmp_path / "engine.toml"
    written.write_text(config_toml(config))
    assert load_config(written, environ={}).people.roster == "/srv/roster.toml"


def test_live_ids_are_namespaced_so_they_never_meet_the_history() -> None:
    line = orjson.dumps({"event_id": "abc", "type": "deal.closed", "deal_id": "op-00001",
                         "customer_id": "acc-00001", "team_id": "dach", "rep_id": "rep-001",
                         "outcome": "won", "amount": 10})
    event = orjson.loads(namespaced(line))
    assert (event["event_id"], event["deal_id"], event["customer_id"]) == \
        ("live-abc", "live-op-00001", "live-acc-00001")
    assert (event["team_id"], event["rep_id"]) == ("dach", "rep-001")  # the same organisation


def test_the_prometheus_config_scrapes_the_worker_and_loads_the_rules(tmp_path: Path) -> None:
    rules = rule_files()
    credentials = tmp_path / "metrics.token"
    credentials.write_text("kpi_x\n")
    text = prometheus_config("127.0.0.1:6066", rules, credentials_file=credentials)
    assert f"credentials_file: \"{credentials}\"" in text
    assert "scrape_interval: 5s" in text
    assert '"127.0.0.1:6066"' in text
    assert all(str(path) in text for path in rules)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: the config was not validated")
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    check = subprocess.run([promtool, "check", "config", str(path)], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_rule_file_prometheus_would_refuse_is_left_out_with_a_warning(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed")
    (tmp_path / "good.yml").write_text(
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: up\n")
    (tmp_path / "bad.yml").write_text("groups:\n  - name: g\n    rules:\n      - record: x\n")
    warnings: list[str] = []
    assert rule_files(tmp_path, say=warnings.append) == [tmp_path / "good.yml"]
    assert len(warnings) == 1 and "bad.yml" in warnings[0]


def test_a_default_port_that_is_taken_falls_back_to_a_free_one() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert choose_port(None, taken, "worker") != taken
        with pytest.raises(DemoError, match=f"port {taken} .* already in use"):
            choose_port(taken, 6066, "worker")


def test_an_explicit_port_in_use_stops_the_demo_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", "demo", "--web-port", str(port),
             "--dir", str(tmp_path / "demo")],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert f"port {port} for the worker's web server is already in use" in result.stderr
    assert not (tmp_path / "demo" / "kafka").exists()


# -- the whole demo ------------------------------------------------------------------------------


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _leftovers(marker: str) -> list[str]:
    """Processes whose command line names ``marker`` (the test's temp dir), but not pgrep."""
    result = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True,
                            check=False)
    return [line for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_serves_growing_kpis_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    if shutil.which("pgrep") is None:
        pytest.skip("pgrep (procps) is needed to look for leftover processes")
    prometheus = shutil.which("prometheus") is not None
    web_port, prometheus_port = free_port(), free_port()
    output = tmp_path / "demo.out"
    started = time.monotonic()
    with open(output, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "demo", "--duration", "60",
             "--backfill-days", "30", "--web-port", str(web_port),
             "--prometheus-port", str(prometheus_port)],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            # this checkout's code, not whichever the virtualenv has installed
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    base = f"http://127.0.0.1:{web_port}"

    def printed() -> str:
        return output.read_text(errors="replace")

    def until(condition: Callable[[], object], what: str) -> object:
        while time.monotonic() - started < DEMO_TIMEOUT_SECONDS:
            if demo.poll() is not None:
                raise AssertionError(f"the demo exited ({demo.returncode}) while waiting for "
                                     f"{what}:\n{printed()}")
            try:
                value = condition()
            except (OSError, ValueError, KeyError):
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{printed()}")

    tokens: dict[str, str] = {}

    def counted() -> int:
        status, body = _get(base + "/api/kpis", tokens["executive"])
        return json.loads(body)["events"]["counted"] if status == 200 else 0

    try:
        history = until(lambda: re.search(r"history: sent ([\d,]+) events", printed()),
                        "the history to be sent")
        history_events = int(history.group(1).replace(",", ""))
        # the summary's last line: every link is printed by then
        until(lambda: "stops everything on Ctrl-C" in printed(), "the demo to be up")
        for url in (f"{base}/wallboard?token=", f"{base}/api/kpis", f"{base}/metrics",
                    f"{base}/ready"):
            assert url in printed()
        for audience in ("executive", "metrics"):
            tokens[audience] = re.search(rf"{audience} token\s+(kpi_\S+)", printed()).group(1)
        kiosk = re.search(r"/wallboard\?token=(kpi_\S+)", printed()).group(1)
        assert _get(base + "/ready")[0] == 200
        # authentication is on: the printed links work, nothing works without them
        assert _get(base + "/api/kpis")[0] == 401
        assert _get(base + "/wallboard")[0] == 401
        status, page = _get(f"{base}/wallboard?token={kiosk}")
        assert status == 200 and b"data-kpi" in page

        # The whole history gets counted, then live traffic keeps the count growing.
        first = until(lambda: (n := counted()) >= history_events and n, "the history counted")
        until(lambda: counted() > first, "live events to be counted")
        # A living pipeline: open deals in the demo's stages, deals moving between them.
        windows = json.loads(_get(base + "/api/kpis", tokens["executive"])[1])["windows"]
        month = next(w for w in windows if (w["period"], w["offset"]) == ("month", 0))
        kpis = month["company"]["kpis"]
        stages = {stage.id for stage in base_config(None).pipeline.stages}
        assert set(kpis["pipeline_deals_by_stage"]) == stages
        assert sum(kpis["pipeline_deals_by_stage"].values()) > 0, kpis
        assert sum(kpis["stage_entries"].values()) > 0, kpis
        assert _get(base + "/metrics", tokens["executive"])[0] == 200
        assert _get(base + "/metrics")[0] == 401
        status, body = _get(base + "/metrics", tokens["metrics"])
        assert status == 200
        assert re.search(rb"^kpi_\w+", body, re.MULTILINE), body[:500]

        if prometheus:
            prom = f"http://127.0.0.1:{prometheus_port}"
            assert f"{prom}/graph" in printed()
            assert _get(prom + "/-/ready")[0] == 200

            def worker_is_up() -> bool:
                targets = json.loads(_get(prom + "/api/v1/targets")[1])["data"]
                return any(t["health"] == "up" and f":{web_port}/metrics" in t["scrapeUrl"]
                           for t in targets["activeTargets"])

            until(worker_is_up, "Prometheus to scrape the worker")

        demo.send_signal(signal.SIGINT)
        assert demo.wait(STOP_TIMEOUT_SECONDS) == 0, printed()
        assert "stopping (SIGINT)" in printed()
        assert _leftovers(str(tmp_path)) == [], printed()
    finally:
        if demo.poll() is None:
            demo.terminate()
            try:
                demo.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                demo.kill()
        for line in _leftovers(str(tmp_path)):  # never leave them on a shared machine
            pid = int(line.split()[0])
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)


def test_the_demo_names_every_rep_and_team_its_traffic_has(tmp_path: Path) -> None:
    """Without a roster of the user's, the demo writes one for the generated reps: its
    wallboard shows names, like one fed by a real CRM roster."""
    from engine.people.roster import load_roster

    roster_file = tmp_path / "roster.toml"
    config = demo_config(base_config(None), "127.0.0.1:1", 7000, tmp_path / "w",
                         roster_file=roster_file)
    assert config.people.roster == str(roster_file)
    roster = load_roster(roster_file)
    as_of = datetime(2026, 6, 10, 12, tzinfo=UTC)
    start = as_of - timedelta(days=30)
    reps, teams = set(), set()
    for line in history_lines(backfill_settings(config, 1, start, as_of), start, as_of):
        event = json.loads(line)
        reps.update([event["rep_id"]] if event.get("rep_id") else [])
        teams.update([event["team_id"]] if event.get("team_id") else [])
    assert reps and reps <= set(roster.rep_names())
    assert teams and teams <= set(roster.team_names)
    assert len(set(roster.rep_names().values())) == len(roster.rep_names())  # no two alike
