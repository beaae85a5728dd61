"""A real Prometheus for tests: Debian's ``prometheus`` binary, started for one test or module.

Several tests check what the project's exposition and recording rules do in Prometheus itself
(the rules' PromQL, the dashboards' queries, the wallboard's Prometheus mode), so nothing short
of the real server will do. They need the same things from it, kept here once:

- it listens on a free loopback port and keeps its TSDB in the test's temporary directory, so
  that tests running side by side never share a server or its data;
- it is ready before the first query: a Prometheus that is still starting answers 503, which
  is not a query result;
- it always stops, also when the test fails or the server never became ready: a leftover
  server would keep scraping, hold its port and outlive the test run. Use it as a context
  manager, or call :meth:`Prometheus.stop` in a ``finally``; a server nobody stopped is still
  terminated when its object is collected or the interpreter exits.

What differs between the tests is a parameter: the scrape targets, the rule files and the
scrape interval (a slow exporter wants a longer one, a live wallboard a shorter one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import pytest

from engine.kafka_local import free_port

# On PATH, or where Debian's package puts it when the test's PATH lacks /usr/bin.
BINARY = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
NOT_INSTALLED = "the prometheus binary is not installed (apt-get install prometheus)"


def require_binary() -> str:
    """The binary's path; skips the calling test where Prometheus is not installed."""
    if BINARY is None:
        pytest.skip(NOT_INSTALLED)
    return BINARY


class Prometheus:
    """``prometheus`` on a free loopback port, scraping ``targets`` (``host:port``, job
    ``kpi-engine``) every ``scrape_interval`` and evaluating ``rule_files`` every second, ready
    once constructed (or raising, stopped, after ``ready_timeout`` seconds).

    ``scrape`` adds to the scrape job (e.g. ``scheme``, ``tls_config``, ``authorization``
    for a worker with tokens and HTTPS: tests/web_access.py).

    ``workdir`` receives the configuration, the log (``prometheus.log``) and the TSDB
    (``tsdb/``, a name that stays clear of a worker's ``data/`` in the same directory). The
    scrape timeout equals the interval: a scrape may take all of it before it counts as
    failed, and a failed scrape makes every series of its target stale at once.
    """

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path], *,
                 scrape_interval: str, evaluation_interval: str = "1s",
                 ready_timeout: float = 60, scrape: dict[str, Any] | None = None) -> None:
        binary = require_binary()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": evaluation_interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": "kpi-engine", **(scrape or {}),
                                "static_configs": [{"targets": list(targets)}]}],
        }))
        self.log_path = workdir / "prometheus.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        # Also run when the object is collected or the interpreter exits without stop().
        self._stop = weakref.finalize(self, _terminate, self.process, self.log)
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> None:
        """Until ``/-/ready`` answers 200: before that, queries fail with 503."""
        self._until(self._ready, "it to be ready", timeout)

    def _ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
            return response.status == 200

    def api(self, path: str, **params: Any) -> Any:
        """The ``data`` of ``GET /api/v1/<path>``; asserts the status is ``success`` and shows
        Prometheus's own error otherwise."""
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        assert body["status"] == "success", (params, body)
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query, now or at the Unix time ``at``."""
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        return self.api("query", **params)["result"]

    def label_values(self, selector: str, label: str) -> list[str]:
        return sorted(self.api(f"label/{label}/values", **{"match[]": selector}))

    def wait_for(self, promql: str, timeout: float = 90) -> None:
        """Until ``promql`` has a result, e.g. until a rule has been evaluated."""
        self._until(lambda: self.query(promql), f"a result for {promql}", timeout)

    def _until(self, condition: Callable[[], Any], what: str, timeout: float) -> None:
        """Polls ``condition`` until it is true (an ``OSError`` means not yet); raises when the
        server exits or ``timeout`` passes, with the end of its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}) while waiting "
                                   f"for {what}; log:\n{self.log_tail()}")
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what} from prometheus; "
                           f"log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminates the server and waits for it (kills it if it hangs); idempotent."""
        self._stop()


def _terminate(process: subprocess.Popen[bytes], log: BinaryIO) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    log.close()
