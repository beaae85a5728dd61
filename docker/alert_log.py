"""A webhook receiver that prints Alertmanager's notifications, for the compose stack.

Why: the stack should show alerts end to end (rule -> Prometheus -> Alertmanager -> receiver)
without a Slack or PagerDuty account. Alertmanager posts to ``http://alert-log:9095/<receiver>``
(``alertmanager/alertmanager.yml``); each alert becomes one line on stdout, so
``docker compose logs -f alert-log`` is the on-call channel. Replace the receivers with real
integrations in production. Standard library only, so it runs in the engine image.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 9095


def format_notification(receiver: str, payload: dict) -> list[str]:
    """One line per alert: receiver, status, name, labels that say where, summary."""
    lines = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        where = ", ".join(f"{key}={labels[key]}" for key in ("severity", "scope", "team", "instance",
                                                              "topic") if key in labels)
        summary = alert.get("annotations", {}).get("summary", "")
        lines.append(f"[{receiver}] {alert.get('status', '?').upper()} "
                     f"{labels.get('alertname', '?')} ({where}): {summary}")
    return lines


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            payload = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        for line in format_notification(self.path.strip("/") or "default", payload):
            print(line, flush=True)
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 (health check)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silence the per-request access log; the alert lines are the output."""


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else PORT
    print(f"alert-log: listening on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
