"""``kpi-engine grafana push`` against a recording stand-in for Grafana's HTTP API.

The stand-in (a ``http.server`` on 127.0.0.1, a free port) keeps folders, dashboards and alert
rules like Grafana does (ids, versions, folder of each dashboard), checks the bearer token, and
records every request, so the tests check paths, headers, bodies and that a second push writes
nothing.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.grafana_push import PushError, connect, load_json_objects, push

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"
TOKEN = "glsa_test-token-123"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """State and request log of the stand-in; ``prefix`` is the path Grafana is served under."""

    url: str = ""
    prefix: str = "/"
    token: str = TOKEN
    forbid_writes: bool = False
    requests: list[Request] = field(default_factory=list)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if not path.startswith(self.prefix + "api/"):
            return 404, "<html>Not found</html>"
        path = "/" + path[len(self.prefix):]
        if method != "GET" and self.forbid_writes:
            return 403, {"message": "You'll need additional permissions to perform this action."}
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "folders"]:
            return self._folders(method, parts[2:], body)
        if parts[:3] == ["api", "dashboards", "uid"] and method == "GET":
            stored = self.dashboards.get(parts[3])
            if stored is None:
                return 404, {"message": "Dashboard not found"}
            return 200, {"dashboard": copy.deepcopy(stored["dashboard"]),
                         "meta": {"folderUid": stored["folderUid"], "version": stored["version"]}}
        if parts == ["api", "dashboards", "db"] and method == "POST":
            return self._save_dashboard(body)
        if parts[:4] == ["api", "v1", "provisioning", "alert-rules"]:
            return self._rules(method, parts[4:], body)
        return 404, {"message": "Not found"}

    def _folders(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "GET" and rest:
            folder = self.folders.get(rest[0])
            return (200, folder) if folder else (404, {"message": "folder not found"})
        if method == "POST" and not rest:
            if body["uid"] in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            self.folders[body["uid"]] = {"id": self._id(), "uid": body["uid"],
                                         "title": body["title"], "version": 1}
            return 200, self.folders[body["uid"]]
        if method == "PUT" and rest and rest[0] in self.folders:
            folder = self.folders[rest[0]]
            folder.update(title=body["title"], version=folder["version"] + 1)
            return 200, folder
        return 404, {"message": "folder not found"}

    def _save_dashboard(self, body: dict[str, Any]) -> tuple[int, Any]:
        dashboard = body["dashboard"]
        uid = dashboard["uid"]
        if body.get("folderUid") and body["folderUid"] not in self.folders:
            return 400, {"message": "folder not found"}
        old = self.dashboards.get(uid)
        if old is not None and not body.get("overwrite"):
            return 412, {"status": "version-mismatch", "message": "The dashboard has been changed"}
        version = 1 if old is None else old["version"] + 1
        ident = self._id() if old is None else old["dashboard"]["id"]
        self.dashboards[uid] = {"dashboard": {**dashboard, "id": ident, "version": version},
                                "folderUid": body.get("folderUid", ""), "version": version}
        return 200, {"id": ident, "uid": uid, "status": "success", "version": version,
                     "url": f"/d/{uid}/x"}

    def _rules(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if method == "GET" and rest:
            rule = self.rules.get(rest[0])
            return (200, rule) if rule else (404, {"message": "rule not found"})
        if method == "POST" and not rest:
            self.rules[body["uid"]] = {**body, "id": self._id(), "provenance": "api",
                                       "updated": "2026-01-01T00:00:00Z"}
            return 201, self.rules[body["uid"]]
        if method == "PUT" and rest and rest[0] in self.rules:
            self.rules[rest[0]].update(body)
            return 200, self.rules[rest[0]]
        return 404, {"message": "rule not found"}

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _handler(fake: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            fake.requests.append(Request(self.command, self.path, dict(self.headers), body))
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                status, payload = 401, {"message": "Unauthorized"}
            else:
                status, payload = fake.handle(self.command, self.path, body)
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if isinstance(payload, str)
                             else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dashboards() -> list[dict[str, Any]]:
    return load_json_objects(DASHBOARDS_DIR)


def _push(grafana: FakeGrafana, dashboards: list[dict[str, Any]], **kwargs: Any):
    api = connect(kwargs.pop("url", grafana.url), kwargs.pop("token", TOKEN), timeout=5)
    return push(api, dashboards, url=grafana.url, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the push -------------------------------------------------------------------------------


def test_first_push_creates_the_folder_then_each_dashboard_in_it(grafana, dashboards):
    report = _push(grafana, dashboards)

    assert report.folder == "created"
    assert report.dashboards == {d["uid"]: "created" for d in dashboards}
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in grafana.requests)
    assert [(r.method, r.path) for r in grafana.requests[:2]] == [
        ("GET", "/api/folders/sales-kpis"), ("POST", "/api/folders")]
    assert grafana.requests[1].body == {"title": "Sales KPIs", "uid": "sales-kpis"}
    saves = [r for r in grafana.requests if r.path == "/api/dashboards/db"]
    assert [r.body["dashboard"]["uid"] for r in saves] == [d["uid"] for d in dashboards]
    for save, dashboard in zip(saves, dashboards, strict=True):
        assert save.method == "POST"
        assert save.body["folderUid"] == "sales-kpis"
        assert save.body["overwrite"] is True
        assert save.body["dashboard"] == dashboard
    lookups = [r.path for r in grafana.requests if r.path.startswith("/api/dashboards/uid/")]
    assert lookups == [f"/api/dashboards/uid/{d['uid']}" for d in dashboards]
    assert set(grafana.dashboards) == {"kpi-executive", "kpi-sales-manager", "kpi-rep",
                                       "kpi-wallboard"}


def test_a_second_push_writes_nothing(grafana, dashboards):
    _push(grafana, dashboards)
    versions = {uid: d["version"] for uid, d in grafana.dashboards.items()}
    grafana.requests.clear()

    report = _push(grafana, dashboards)

    assert not report.changed
    assert report.folder == "unchanged"
    assert set(report.dashboards.values()) == {"unchanged"}
    assert grafana.writes() == []
    assert {uid: d["version"] for uid, d in grafana.dashboards.items()} == versions


def test_a_changed_dashboard_is_overwritten_and_only_that_one(grafana, dashboards):
    _push(grafana, dashboards)
    grafana.requests.clear()
    changed = [dict(d, title=d["title"] + " (new)") if d["uid"] == "kpi-rep" else d
               for d in dashboards]

    report = _push(grafana, changed)

    assert report.dashboards["kpi-rep"] == "updated"
    assert [r.body["dashboard"]["uid"] for r in grafana.writes()] == ["kpi-rep"]
    assert grafana.writes()[0].body["overwrite"] is True
    assert grafana.dashboards["kpi-rep"]["version"] == 2
    assert grafana.dashboards["kpi-rep"]["dashboard"]["title"].endswith("(new)")


def test_a_dashboard_found_in_another_folder_is_moved_into_ours(grafana, dashboards):
    grafana.folders["elsewhere"] = {"id": 99, "uid": "elsewhere", "title": "Elsewhere",
                                    "version": 1}
    grafana.dashboards["kpi-rep"] = {
        "dashboard": {**next(d for d in dashboards if d["uid"] == "kpi-rep"), "id": 7,
                      "version": 3},
        "folderUid": "elsewhere", "version": 3}

    report = _push(grafana, dashboards)

    assert report.dashboards["kpi-rep"] == "updated"
    assert grafana.dashboards["kpi-rep"]["folderUid"] == "sales-kpis"
    assert grafana.dashboards["kpi-rep"]["dashboard"]["id"] == 7


def test_an_existing_folder_is_looked_up_by_uid_and_renamed_not_duplicated(grafana, dashboards):
    grafana.folders["sales-kpis"] = {"id": 5, "uid": "sales-kpis", "title": "Old name",
                                     "version": 1}

    report = _push(grafana, dashboards)

    assert report.folder == "updated"
    folder_writes = [r for r in grafana.writes() if r.path.startswith("/api/folders")]
    assert [(r.method, r.path) for r in folder_writes] == [("PUT", "/api/folders/sales-kpis")]
    assert folder_writes[0].body == {"title": "Sales KPIs", "overwrite": True}
    assert grafana.folders["sales-kpis"]["title"] == "Sales KPIs"


def test_alert_rules_are_upserted_into_the_folder_once(grafana, dashboards):
    rule = {"uid": "kpi-win-rate-low", "title": "Win rate below 20 %", "ruleGroup": "kpi",
            "condition": "C", "for": "15m", "data": [], "noDataState": "OK",
            "execErrState": "Error"}

    first = _push(grafana, dashboards, alert_rules=[rule])
    grafana.requests.clear()
    second = _push(grafana, dashboards, alert_rules=[rule])

    assert first.alert_rules == {"kpi-win-rate-low": "created"}
    assert grafana.rules["kpi-win-rate-low"]["folderUID"] == "sales-kpis"
    assert second.alert_rules == {"kpi-win-rate-low": "unchanged"}
    assert grafana.writes() == []

    third = _push(grafana, dashboards, alert_rules=[dict(rule, **{"for": "30m"})])
    assert third.alert_rules == {"kpi-win-rate-low": "updated"}
    (write,) = grafana.writes()
    assert (write.method, write.path) == (
        "PUT", "/api/v1/provisioning/alert-rules/kpi-win-rate-low")


def test_grafana_served_under_a_sub_path(grafana, dashboards):
    grafana.prefix = "/grafana/"

    report = _push(grafana, dashboards, url=grafana.url + "/grafana")

    assert report.folder == "created"
    assert all(r.path.startswith("/grafana/api/") for r in grafana.requests)


# -- clear errors ---------------------------------------------------------------------------


def test_a_wrong_token_is_a_clear_401_error(grafana, dashboards):
    with pytest.raises(PushError) as err:
        _push(grafana, dashboards, token="wrong")
    message = str(err.value)
    assert "401" in message and "GRAFANA_TOKEN" in message and grafana.url in message
    assert "wrong" not in message
    assert grafana.writes() == []


def test_missing_permissions_is_a_clear_403_error(grafana, dashboards):
    grafana.forbid_writes = True
    with pytest.raises(PushError, match="403 Forbidden.*Editor role"):
        _push(grafana, dashboards)


def test_a_url_that_is_not_the_grafana_root_is_a_clear_404_error(grafana, dashboards):
    grafana.prefix = "/grafana/"
    with pytest.raises(PushError, match=r"404 Not Found while creating folder sales-kpis.*--url"):
        _push(grafana, dashboards)


def test_connection_refused_is_a_clear_error(dashboards):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(PushError, match=r"cannot connect to Grafana at .*connection refused"):
        push(connect(url, TOKEN, timeout=5), dashboards, url=url)


def test_a_dashboard_file_without_uid_is_refused(tmp_path):
    (tmp_path / "x.json").write_text('{"title": "no uid"}')
    with pytest.raises(PushError, match="uid"):
        load_json_objects(tmp_path)


# -- the command ----------------------------------------------------------------------------


def test_command_takes_the_token_from_the_environment_and_is_idempotent(
        grafana, monkeypatch, capsys):
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    monkeypatch.delenv("GRAFANA_URL", raising=False)

    assert main(["grafana", "push", "--url", grafana.url]) == 0
    out = capsys.readouterr().out
    assert "folder sales-kpis: created" in out and "dashboard kpi-wallboard: created" in out

    monkeypatch.setenv("GRAFANA_URL", grafana.url)
    grafana.requests.clear()
    assert main(["grafana", "push"]) == 0
    assert "Grafana is up to date" in capsys.readouterr().out
    assert grafana.writes() == []


def test_command_without_a_token_is_a_usage_error(grafana, monkeypatch, capsys):
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert main(["grafana", "push", "--url", grafana.url]) == 2
    assert "GRAFANA_TOKEN" in capsys.readouterr().err
    assert grafana.requests == []


def test_command_reports_an_unreachable_grafana(monkeypatch, capsys):
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert main(["grafana", "push", "--url", f"http://127.0.0.1:{_free_port()}",
                 "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect" in err and TOKEN not in err


def test_command_pushes_alert_rules_from_a_directory(grafana, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    (tmp_path / "rules.json").write_text(json.dumps([
        {"uid": "r1", "title": "one", "ruleGroup": "kpi", "condition": "A", "data": []}]))
    assert main(["grafana", "push", "--url", grafana.url, "--alert-rules", str(tmp_path)]) == 0
    assert "alert rule r1: created" in capsys.readouterr().out
    assert grafana.rules["r1"]["folderUID"] == "sales-kpis"


def test_build_command_check_passes_on_the_committed_files():
    assert main(["grafana", "build", "--check"]) == 0
