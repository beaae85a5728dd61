"""``kpi-engine grafana build|push``: render the dashboards to JSON; put them into a Grafana.

``build`` runs the generator in ``grafana/build.py`` (a source checkout with the test extras,
which bring grafana-foundation-sdk). ``push`` needs only the JSON files and ``grafana-client``:
the URL comes from ``--url`` or ``GRAFANA_URL``, the token from the environment variable
``GRAFANA_TOKEN`` only, so it never shows in a shell history or a process list.
Exit status: 0 done (``build --check``: up to date), 1 Grafana refused or is unreachable
(``build --check``: stale files), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO_ROOT / "grafana" / "dashboards"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "grafana", help="build the Grafana dashboards, or push them into a running Grafana",
        description="Dashboards as code: 'build' renders grafana/dashboards_src/*.py into "
                    "grafana/dashboards/*.json; 'push' upserts those files into Grafana.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="render the dashboards to JSON",
                               description="Render the dashboards to JSON (deterministic).")
    build.add_argument("--out", type=Path, default=DASHBOARDS_DIR, metavar="DIR",
                       help="where to write the JSON files (default: grafana/dashboards)")
    build.add_argument("--config", metavar="FILE.toml",
                       help="take time zone, week start, fiscal year and currency from this "
                            "engine configuration (default: built-in defaults, as committed)")
    build.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 if the files in --out are stale")
    build.set_defaults(func=_build)

    push = actions.add_parser(
        "push", help="upsert the folder and dashboards into a running Grafana",
        description="Upsert the folder, the dashboards and optional alert rules into Grafana "
                    "through its HTTP API. The token is read from $GRAFANA_TOKEN "
                    "(a service-account token with the Editor role).")
    push.add_argument("--url", default=None,
                      help="Grafana root URL (default: $GRAFANA_URL, else http://localhost:3000)")
    push.add_argument("--dashboards", type=Path, default=DASHBOARDS_DIR, metavar="DIR",
                      help="directory of dashboard JSON files (default: grafana/dashboards)")
    push.add_argument("--alert-rules", type=Path, default=None, metavar="DIR",
                      help="also upsert the alert rules in DIR/*.json (Grafana's provisioning "
                           "API format, each with a fixed uid) into the folder")
    push.add_argument("--folder-uid", default=None, help="folder uid (default: sales-kpis)")
    push.add_argument("--folder-title", default=None,
                      help="folder title (default: Sales KPIs)")
    push.add_argument("--timeout", type=float, default=10.0,
                      help="seconds to wait for each request (default: 10)")
    push.set_defaults(func=_push)


def _build(args: argparse.Namespace) -> int:
    if not (REPO_ROOT / "grafana" / "build.py").is_file():
        print("kpi-engine grafana build: needs a source checkout (grafana/build.py not found)",
              file=sys.stderr)
        return 2
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from grafana import build
    except ImportError as exc:
        print(f"kpi-engine grafana build: {exc}; install the test extras: "
              "pip install -e '.[test]'", file=sys.stderr)
        return 2
    return build.run(args)


def _push(args: argparse.Namespace) -> int:
    from engine import grafana_push as gp

    url = args.url or os.environ.get(gp.URL_ENV) or gp.DEFAULT_URL
    token = os.environ.get(gp.TOKEN_ENV) or None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        print(f"kpi-engine grafana push: --url must be an http(s) URL, got {url!r}",
              file=sys.stderr)
        return 2
    if token is None and not (parsed.username and parsed.password):
        print(f"kpi-engine grafana push: set {gp.TOKEN_ENV} to a Grafana service-account "
              "token (Editor role)", file=sys.stderr)
        return 2
    try:
        dashboards = gp.load_json_objects(args.dashboards)
        rules = gp.load_json_objects(args.alert_rules) if args.alert_rules else []
        api = gp.connect(url, token, timeout=args.timeout)
        report = gp.push(api, dashboards, alert_rules=rules,
                         folder_uid=args.folder_uid or gp.FOLDER_UID,
                         folder_title=args.folder_title or gp.FOLDER_TITLE,
                         url=_without_password(url))
    except gp.PushError as exc:
        print(f"kpi-engine grafana push: {exc}", file=sys.stderr)
        return 1
    print(f"folder {args.folder_uid or gp.FOLDER_UID}: {report.folder}")
    for uid, state in report.dashboards.items():
        print(f"dashboard {uid}: {state}")
    for uid, state in report.alert_rules.items():
        print(f"alert rule {uid}: {state}")
    if not report.changed:
        print("Grafana is up to date")
    return 0


def _without_password(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return parsed._replace(netloc=f"{parsed.hostname}" + (f":{parsed.port}" if parsed.port
                                                          else "")).geturl()
