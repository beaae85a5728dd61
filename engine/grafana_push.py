"""Upsert the KPI dashboards (and Grafana alert rules, if given) into a running Grafana.

Why an API push next to file provisioning: a hosted or shared Grafana cannot mount our files;
``kpi-engine grafana push`` puts the same committed JSON there through the HTTP API. It uses
``grafana-client`` (grafana-toolbox, maintained, Grafana 9–12) rather than the 2017
``grafana-api-client``, which was written for Grafana 2.

Idempotent: the folder is looked up by uid before it is created, and a dashboard or alert rule
is only written when it differs from what Grafana holds, so a second push with the same files
writes nothing (a dashboard write would only bump its version). Dashboards are written with
``overwrite`` into the folder, so a push also takes over a dashboard with the same uid
elsewhere. A dashboard that Grafana loaded from provisioning files cannot be overwritten
through the API: use one way or the other per Grafana.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import niquests.exceptions
from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

FOLDER_UID = "sales-kpis"
FOLDER_TITLE = "Sales KPIs"
TOKEN_ENV = "GRAFANA_TOKEN"
URL_ENV = "GRAFANA_URL"
DEFAULT_URL = "http://localhost:3000"
PUSH_MESSAGE = "kpi-engine grafana push"

# Set by Grafana on every save; not part of what we compare.
_DASHBOARD_VOLATILE = ("id", "version")


class PushError(Exception):
    """Grafana could not be reached or refused a request; the message says what to do."""


@dataclass
class PushReport:
    """What happened to each object: ``created``, ``updated`` or ``unchanged``."""

    folder: str = "unchanged"
    dashboards: dict[str, str] = field(default_factory=dict)
    alert_rules: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        states = [self.folder, *self.dashboards.values(), *self.alert_rules.values()]
        return any(state != "unchanged" for state in states)


def load_json_objects(directory: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` in ``directory`` (sorted by name); a file holds an object or a list."""
    if not directory.is_dir():
        raise PushError(f"no such directory: {directory}")
    objects: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PushError(f"cannot read {path}: {exc}") from None
        for obj in data if isinstance(data, list) else [data]:
            if not isinstance(obj, dict) or not obj.get("uid"):
                raise PushError(f"{path}: every object needs a fixed 'uid'")
            objects.append(obj)
    return objects


def connect(url: str, token: str | None, timeout: float = 10.0) -> GrafanaApi:
    """A client for the Grafana at ``url`` (its root URL), authenticated by a bearer token.

    Without a token, credentials written into the URL (``http://user:pass@host:3000``) are used
    for basic auth, which suits a local development Grafana only.
    """
    parsed = urlparse(url)
    if parsed.path and not parsed.path.endswith("/"):
        # grafana-client appends "api" to the path as is: a sub-path needs its slash.
        url = parsed._replace(path=parsed.path + "/").geturl()
    return GrafanaApi.from_url(url, credential=token or None, timeout=timeout)


def push(api: GrafanaApi, dashboards: Sequence[dict[str, Any]], *,
         alert_rules: Sequence[dict[str, Any]] = (), folder_uid: str = FOLDER_UID,
         folder_title: str = FOLDER_TITLE, url: str = "") -> PushReport:
    """Upsert the folder, then every dashboard into it, then every alert rule into it."""
    report = PushReport()
    where = _Where(url or getattr(api, "url", "") or "Grafana")
    with _translate_errors(where):
        where.doing = f"looking up folder {folder_uid}"
        report.folder = _upsert_folder(api, folder_uid, folder_title, where)
        for dashboard in dashboards:
            where.doing = f"pushing dashboard {dashboard['uid']}"
            report.dashboards[dashboard["uid"]] = _upsert_dashboard(api, dashboard, folder_uid)
        for rule in alert_rules:
            where.doing = f"pushing alert rule {rule['uid']}"
            report.alert_rules[rule["uid"]] = _upsert_alert_rule(api, rule, folder_uid)
    return report


def _upsert_folder(api: GrafanaApi, uid: str, title: str, where: _Where) -> str:
    existing = _get_or_none(lambda: api.folder.get_folder(uid))
    if existing is None:
        where.doing = f"creating folder {uid}"
        api.folder.create_folder(title, uid=uid)
        return "created"
    if existing.get("title") != title:
        where.doing = f"renaming folder {uid}"
        api.folder.update_folder(uid, title=title, overwrite=True)
        return "updated"
    return "unchanged"


def _upsert_dashboard(api: GrafanaApi, dashboard: dict[str, Any], folder_uid: str) -> str:
    desired = _without(dashboard, _DASHBOARD_VOLATILE)
    existing = _get_or_none(lambda: api.dashboard.get_dashboard(dashboard["uid"]))
    if existing is not None:
        same_content = _without(existing.get("dashboard", {}), _DASHBOARD_VOLATILE) == desired
        same_folder = existing.get("meta", {}).get("folderUid") == folder_uid
        if same_content and same_folder:
            return "unchanged"
    api.dashboard.update_dashboard({"dashboard": desired, "folderUid": folder_uid,
                                    "overwrite": True, "message": PUSH_MESSAGE})
    return "created" if existing is None else "updated"


def _upsert_alert_rule(api: GrafanaApi, rule: dict[str, Any], folder_uid: str) -> str:
    desired = {**rule, "folderUID": rule.get("folderUID") or folder_uid}
    existing = _get_or_none(lambda: api.alertingprovisioning.get_alertrule(rule["uid"]))
    if existing is None:
        api.alertingprovisioning.create_alertrule(desired)
        return "created"
    # Grafana adds fields of its own (id, updated, provenance…): compare ours only.
    if all(existing.get(key) == value for key, value in desired.items()):
        return "unchanged"
    api.alertingprovisioning.update_alertrule(rule["uid"], desired)
    return "updated"


def _get_or_none(fetch: Any) -> Any:
    try:
        return fetch()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _without(obj: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


class _Where:
    """The Grafana URL and the step in progress, for error messages."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.doing = "connecting"


@contextmanager
def _translate_errors(where: _Where) -> Iterator[None]:
    try:
        yield
    except GrafanaUnauthorizedError:
        raise PushError(
            f"Grafana at {where.url} rejected the credentials (401 Unauthorized) while "
            f"{where.doing}: set {TOKEN_ENV} to a valid service-account token") from None
    except GrafanaTimeoutError as exc:
        raise PushError(f"Grafana at {where.url} did not answer in time while {where.doing}: "
                        f"{exc.message}") from None
    except GrafanaServerError as exc:
        raise PushError(f"Grafana at {where.url} failed while {where.doing}: "
                        f"{exc.message}") from None
    except GrafanaClientError as exc:
        detail = _detail(exc)
        if exc.status_code == 403:
            raise PushError(
                f"Grafana at {where.url} refused {where.doing} (403 Forbidden: {detail}): the "
                "token's service account needs the Editor role") from None
        if exc.status_code == 404:
            raise PushError(
                f"Grafana at {where.url} answered 404 Not Found while {where.doing}: is --url "
                "the Grafana root URL (with its sub-path, if it is served under one)?") from None
        raise PushError(f"Grafana at {where.url} refused {where.doing} "
                        f"({exc.status_code}: {detail})") from None
    except niquests.exceptions.ConnectionError as exc:
        raise PushError(f"cannot connect to Grafana at {where.url} (is it running, and is "
                        f"--url right?): {_reason(exc)}") from None
    except GrafanaException as exc:
        raise PushError(f"request to Grafana at {where.url} failed while {where.doing}: "
                        f"{exc.message}") from None


def _detail(exc: GrafanaClientError) -> str:
    response = exc.response
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    return str(response or exc.message)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host",
                  "timed out"):
        if known.lower() in text.lower():
            return known.lower()
    return text
