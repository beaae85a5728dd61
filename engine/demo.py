"""The newcomer demo: the whole engine running on one machine with one command.

Why: the first thing a newcomer should see is the engine doing its job, with KPIs that move,
before reading any code or writing any config. ``kpi-engine demo`` starts a real Kafka broker,
writes a config, backfills recent history (so month and year windows are not empty), starts a
real worker, feeds it live traffic and, when installed, Prometheus with the recording rules;
then it prints where to look. Everything lives under one directory (``.kpi-engine/demo``) that
each run starts afresh, and everything is stopped, in reverse order, on Ctrl-C, SIGTERM,
``--duration`` or any failure; a failure names the log to read and shows its tail.

Why the live ids are namespaced: the history and the live stream are two runs of the same
seeded model, so both number their leads, deals and customers from 1 (``ld-00001``…). The SPEC
keeps the *earliest* event of an entity, so live ``lead.created`` events reusing history ids
would never count as new leads. Live ids get a ``live-`` prefix instead (:func:`namespaced`).

The demo turns authentication on, as a real deployment would (docs/security.md): it makes an
executive token, a kiosk link for the wallboard and a token for its Prometheus, keeps their
hashes in ``<dir>/tokens`` and prints the links; the worker still listens on loopback only.

Children run in their own sessions, so a terminal's Ctrl-C reaches only this process and the
stop order stays ours; on Linux they also get a parent-death signal, so even a ``kill -9`` of
the demo leaves no worker or Prometheus behind (and the next run stops a leftover broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import orjson
from aiokafka.errors import KafkaError

from engine.config import (
    AuthConfig,
    Config,
    KafkaConfig,
    PeopleConfig,
    config_from_mapping,
    load_config,
)
from engine.kafka_local import KafkaLocalError, LocalKafka, free_port, read_state, stop_pid
from engine.security.tokens import TokenEntry, format_token_line, new_token, token_hash

if TYPE_CHECKING:
    from engine.tooling.generator import GeneratorSettings

__all__ = ["Demo", "DemoError", "DemoOptions", "config_toml", "demo_config", "namespaced",
           "prometheus_config"]

DEFAULT_DIR = Path(".kpi-engine") / "demo"
DEFAULT_WEB_PORT = 6066
DEFAULT_PROMETHEUS_PORT = 9090
DEFAULT_BACKFILL_DAYS = 400
DEFAULT_RATE = 5.0
#: History density: 400 days come to ~100k events (~110k with the pipeline's deal.updated on top),
#: which one worker ingests in a minute or two; the embedded targets are sized for it.
BACKFILL_EVENTS_PER_DAY = 250
SCRAPE_INTERVAL = "5s"
LIVE_ID_PREFIX = "live-"
LIVE_ID_FIELDS = ("event_id", "lead_id", "deal_id", "customer_id", "subscription_id")

WORKER_READY_SECONDS = 180.0
PROMETHEUS_READY_SECONDS = 60.0
WORKER_STOP_SECONDS = 45.0
PROMETHEUS_STOP_SECONDS = 20.0
LOG_TAIL_LINES = 25

REPO_ROOT = Path(__file__).resolve().parent.parent

# The embedded defaults: a European company, EUR, a five-stage pipeline (SPEC §7) and targets
# sized for the default history (about 2,100 leads, 150 deals won and 2.2 M EUR won a month across
# five teams; about 350 deals and 6 M EUR open, 1.7 M EUR of it weighted).
DEMO_DEFAULTS: dict[str, Any] = {
    "calendar": {"timezone": "Europe/Berlin", "week_start": "monday",
                 "fiscal_year_start_month": 1},
    "money": {"currency": "EUR", "gross_margin": 0.8},
    "pipeline": {"stages": [
        {"id": "discovery", "probability": 0.1, "category": "pipeline"},
        {"id": "qualification", "probability": 0.2, "category": "pipeline"},
        {"id": "proposal", "probability": 0.4, "category": "best_case"},
        {"id": "negotiation", "probability": 0.7, "category": "commit"},
        {"id": "verbal", "probability": 0.9, "category": "commit"},
    ]},
    "targets": [
        {"kpi": "revenue_won", "period": "month", "value": 2_300_000},
        {"kpi": "revenue_won", "period": "quarter", "value": 6_500_000},
        {"kpi": "revenue_won", "period": "year", "value": 24_000_000},
        {"kpi": "deals_won", "period": "month", "value": 160},
        {"kpi": "leads_created", "period": "week", "value": 520},
        {"kpi": "new_customers", "period": "month", "value": 200},
        {"kpi": "win_rate", "period": "quarter", "value": 0.33},
        {"kpi": "churn_rate", "period": "month", "value": 0.025},
        {"kpi": "revenue_won", "period": "month", "value": 550_000, "team": "dach"},
        {"kpi": "revenue_won", "period": "month", "value": 400_000, "team": "france"},
        {"kpi": "activities", "period": "week", "value": 20, "rep": "rep-001"},
        {"kpi": "pipeline_weighted", "period": "quarter", "value": 2_000_000},
        {"kpi": "forecast_weighted", "period": "quarter", "value": 6_500_000},
        {"kpi": "pipeline_amount", "period": "month", "value": 6_500_000},
        {"kpi": "pipeline_weighted", "period": "month", "value": 400_000, "team": "dach"},
        {"kpi": "pipeline_deals", "period": "week", "value": 5, "rep": "rep-001"},
    ],
}

class DemoError(RuntimeError):
    """The demo cannot go on; the message says what failed and shows the relevant log."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while the demo was still starting up."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the user can choose; everything else is an embedded default."""

    directory: Path = DEFAULT_DIR
    config_path: str | None = None
    backfill_days: float = DEFAULT_BACKFILL_DAYS
    rate: float = DEFAULT_RATE
    duration: float | None = None
    prometheus: bool = True
    web_port: int | None = None         # None: 6066, or a free port if that is taken
    prometheus_port: int | None = None  # None: 9090, or a free port if that is taken
    seed: int = 1


# --- pure helpers -------------------------------------------------------------------------------


def base_config(config_path: str | None) -> Config:
    """The user's config when given, else the embedded demo defaults."""
    if config_path is not None:
        return load_config(config_path)
    return config_from_mapping(DEMO_DEFAULTS)


def demo_config(base: Config, bootstrap: str, web_port: int, data_dir: Path,
                tokens_file: Path | None = None, roster_file: Path | None = None) -> Config:
    """``base`` pointed at the demo's broker, web port, data directory and tokens file; with
    ``roster_file`` and no roster of its own, a roster naming the generated reps is written
    there and used (the wallboard then shows names, as with a real roster)."""
    auth = base.auth if tokens_file is None else replace(base.auth,
                                                         tokens_file=str(tokens_file))
    people = base.people
    if roster_file is not None and people.roster is None:
        from engine.tooling.generator import settings_for
        from engine.tooling.people import roster_toml

        settings = settings_for(base)  # the teams and reps the demo's traffic has
        roster_file.write_text(roster_toml(settings.teams, settings.reps_per_team),
                               encoding="utf-8")
        people = PeopleConfig(roster=str(roster_file))
    return replace(base,
                   kafka=KafkaConfig(bootstrap_servers=bootstrap, client_id=base.kafka.client_id),
                   worker=replace(base.worker, web_host="127.0.0.1", web_port=web_port,
                                  data_dir=str(data_dir)),
                   auth=auth, people=people)


@dataclass(frozen=True, slots=True)
class DemoTokens:
    """The tokens the demo makes for itself: shown once, stored hashed in ``tokens_file``."""

    executive: str
    wallboard: str
    metrics: str
    tokens_file: Path
    metrics_file: Path  # the metrics token itself, for Prometheus' credentials_file

    @classmethod
    def create(cls, directory: Path) -> DemoTokens:
        tokens = {audience: new_token() for audience in ("executive", "wallboard", "metrics")}
        lines = [format_token_line(TokenEntry(sha256=token_hash(token), audience=audience,
                                              name=f"demo-{audience}"))
                 for audience, token in tokens.items()]
        tokens_file, metrics_file = directory / "tokens", directory / "metrics.token"
        _write_private(tokens_file, "\n".join(lines) + "\n")
        _write_private(metrics_file, tokens["metrics"] + "\n")
        return cls(tokens["executive"], tokens["wallboard"], tokens["metrics"], tokens_file,
                   metrics_file)


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def config_toml(config: Config) -> str:
    """``config`` as a TOML file that :func:`engine.config.load_config` reads back as equal."""
    out: list[str] = []
    for section in ("calendar", "money", "limits", "kafka", "topics", "worker", "auth",
                    "web_tls", "people"):
        values = getattr(config, section)
        out.append(f"[{section}]")
        out += [f"{f.name} = {_toml_value(getattr(values, f.name))}"
                for f in fields(values) if getattr(values, f.name) not in (None, ())]
        out.append("")
    for stage in config.pipeline.stages:
        out.append("[[pipeline.stages]]")
        out += [f"{f.name} = {_toml_value(getattr(stage, f.name))}" for f in fields(stage)]
        out.append("")
    for target in config.targets:
        out.append("[[targets]]")
        out += [f"{f.name} = {_toml_value(getattr(target, f.name))}"
                for f in fields(target) if getattr(target, f.name) is not None]
        out.append("")
    return "\n".join(out)


def _toml_value(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def backfill_settings(config: Config, seed: int, start: datetime,
                      end: datetime) -> GeneratorSettings:
    """The traffic of the demo's history over ``[start, end)``: ``BACKFILL_EVENTS_PER_DAY``
    events of CRM business a day, for ``config``'s zone, currency and stages (the ``deal.updated``
    events of a pipeline come on top, so the business, and what the targets are sized for, is
    the same with or without stages)."""
    from engine.tooling.generator import scale_for_events, settings_for

    settings = settings_for(config, seed=seed)
    days = (end - start).total_seconds() / 86_400
    business = max(int(days * BACKFILL_EVENTS_PER_DAY), 1)
    return replace(settings, scale=scale_for_events(replace(settings, stages=()), start, end,
                                                    business))


def prometheus_config(target: str, rule_files: list[Path],
                      scrape_interval: str = SCRAPE_INTERVAL,
                      credentials_file: Path | None = None) -> str:
    """A Prometheus config scraping the worker at ``target`` and loading ``rule_files``;
    with ``credentials_file``, the scrape sends that file's token as a bearer token."""
    rules = "".join(f"  - {json.dumps(str(path))}\n" for path in rule_files)
    authorization = ("" if credentials_file is None else
                     "    authorization:\n"
                     "      type: Bearer\n"
                     f"      credentials_file: {json.dumps(str(credentials_file))}\n")
    return (
        "# Written by kpi-engine demo; rewritten on every run.\n"
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + "scrape_configs:\n"
        "  - job_name: kpi-engine\n"
        "    metrics_path: /metrics\n"
        + authorization +
        "    static_configs:\n"
        f"      - targets: [{json.dumps(target)}]\n"
        "        labels: {instance_name: demo-worker}\n"
    )


RULE_DIRS = (REPO_ROOT / "prometheus" / "rules", REPO_ROOT / "prometheus" / "alerts")


def rule_files(rules_dirs: Path | tuple[Path, ...] = RULE_DIRS,
               say: Callable[[str], None] = print) -> list[Path]:
    """Every ``*.yml`` in ``rules_dirs`` (recording and alerting rules) that ``promtool``
    accepts (all of them without it).

    A rule file that does not load would stop Prometheus from starting; such a file is left
    out with a warning instead, so the demo still runs while someone fixes it.
    """
    dirs = (rules_dirs,) if isinstance(rules_dirs, Path) else rules_dirs
    files = [path for folder in dirs for path in sorted(folder.glob("*.yml"))]
    promtool = shutil.which("promtool")
    if promtool is None:
        return files
    accepted = []
    for path in files:
        check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                               text=True, check=False)
        if check.returncode == 0:
            accepted.append(path)
        else:
            detail = (check.stderr or check.stdout).strip().splitlines()
            say(f"warning: leaving out {path.name}, promtool rejects it: "
                f"{detail[-1] if detail else 'exit ' + str(check.returncode)}")
    return accepted


def namespaced(line: bytes, prefix: str = LIVE_ID_PREFIX) -> bytes:
    """``line`` with its event and entity ids prefixed, so they cannot meet the history's."""
    document = orjson.loads(line)
    for name in LIVE_ID_FIELDS:
        value = document.get(name)
        if isinstance(value, str):
            document[name] = prefix + value
    return orjson.dumps(document)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(requested: int | None, default: int, what: str) -> int:
    """``requested`` if free (else an error), or ``default`` if free, or any free port."""
    if requested is not None:
        if requested and not port_is_free(requested):
            raise DemoError(f"port {requested} for the {what} is already in use on 127.0.0.1; "
                            "pick another one or leave the option out to use a free port")
        return requested or free_port()
    return default if port_is_free(default) else free_port()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path``, indented, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"  ({path} was not written)"
    tail = text.splitlines()[-lines:]
    return f"last lines of {path}:\n" + "\n".join("  " + line for line in tail)


def _http_get(url: str, timeout: float = 5.0, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the demo dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --- the parts ----------------------------------------------------------------------------------


class ChildProcess:
    """A program the demo runs in its own session, logging to a file, stoppable as a group."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Start the program. Call it before any thread of ours runs: ``preexec_fn`` is unsafe
        while other threads may hold locks (the demo starts its live feed thread last)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509

    def exited(self) -> int | None:
        """The exit status if the process has ended, else None."""
        return self.process.poll() if self.process else None

    def stop(self, timeout: float) -> int | None:
        """SIGTERM the group, SIGKILL it after ``timeout``; return the exit status."""
        process = self.process
        if process is None:
            return None
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait)
        with contextlib.suppress(ProcessLookupError):  # anything the child left in its group
            os.killpg(process.pid, signal.SIGKILL)
        return process.poll()

    def failure(self, what: str) -> DemoError:
        return DemoError(f"{what} (exit status {self.exited()}).\n{log_tail(self.log_path)}")


class LiveFeed(threading.Thread):
    """Live CRM traffic at ``rate`` events/s, stamped now, sent to the input topic until stopped."""

    def __init__(self, config: Config, rate: float, seed: int) -> None:
        super().__init__(name="live-feed", daemon=True)
        self.config = config
        self.rate = rate
        self.seed = seed
        self.sent = 0
        self.failed = 0
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()

    def run(self) -> None:
        from engine.producer import send_lines

        try:
            result = asyncio.run(send_lines(self._paced(), topic=self.config.topics.input,
                                            kafka_config=self.config.kafka))
            self.failed = result.failed
        except Exception as exc:  # noqa: BLE001 (reported by the demo's watch loop)
            self.error = exc

    def stop(self, timeout: float = 15.0) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout)

    async def _paced(self) -> AsyncIterator[bytes]:
        from engine.tooling.generator import live_lines, settings_for

        settings = settings_for(self.config, seed=self.seed)
        for due, line in live_lines(settings, self.rate):
            while (delay := due - time.time()) > 0:
                if self._stop_requested.is_set():
                    return
                await asyncio.sleep(min(delay, 0.2))
            if self._stop_requested.is_set():
                return
            self.sent += 1
            yield namespaced(line)


class Console:
    """The demo's voice: numbered steps and indented details on stdout, flushed at once."""

    def __init__(self, steps: int, out: TextIO = sys.stdout) -> None:
        self.steps = steps
        self.step_number = 0
        self.out = out

    def step(self, text: str) -> None:
        self.step_number += 1
        self.say(f"[{self.step_number}/{self.steps}] {text}")

    def detail(self, text: str) -> None:
        self.say(f"      {text}")

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)


# --- the orchestration --------------------------------------------------------------------------


class Demo:
    """Starts the parts in order, watches them, and stops them in reverse order."""

    def __init__(self, options: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.dir = options.directory.resolve()
        self.console = Console(steps=7 if options.prometheus else 6, out=out)
        self.cleanup = contextlib.ExitStack()
        self.stop_requested = threading.Event()
        self.starting = True
        self.stopping = False
        self.worker: ChildProcess | None = None
        self.prometheus: ChildProcess | None = None
        self.tokens: DemoTokens | None = None
        self.kafka: LocalKafka | None = None
        self.feed: LiveFeed | None = None
        self.config: Config | None = None
        self.prometheus_port = 0
        self.backfill_sent = 0
        self.stop_reason = ""

    @property
    def config_path(self) -> Path:
        return self.dir / "engine.toml"

    @property
    def pids_path(self) -> Path:
        return self.dir / "pids.json"

    # -- entry point

    def run(self) -> int:
        """Run until stopped: 0 after a requested stop, 1 after a failure, 130 if interrupted
        while starting. A bad ``--config`` raises :class:`ConfigError` before anything starts."""
        base = base_config(self.options.config_path)
        # aiokafka logs every retried request (e.g. a partition leader still being elected
        # right after topic creation); failures that matter are counted and reported instead.
        logging.getLogger("aiokafka").setLevel(logging.ERROR)
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            with self.cleanup:
                try:
                    self._start(base)
                    self.starting = False
                    self._print_summary()
                    self._watch()
                except DemoError as exc:
                    self.stopping = True
                    print(f"kpi-engine demo: {exc}", file=sys.stderr, flush=True)
                    if self.kafka is not None and self.kafka.pid is not None:
                        self.console.say("stopping everything the demo started")
                    code = 1
            return code
        except Interrupted:
            self.console.say("interrupted while starting; everything started so far is stopped")
            return 130
        finally:
            self.stopping = True
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if _recorded_pids(self.pids_path).get("demo") == os.getpid():
                self.pids_path.unlink(missing_ok=True)

    def _stop_on_exit(self, stop: Callable[[], None]) -> None:
        """Register ``stop`` to run on the way out (reverse order); a failing stop is reported
        and the others still run."""

        def safely() -> None:
            self.stopping = True
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 (the other parts must still stop)
                print(f"kpi-engine demo: while stopping: {exc}", file=sys.stderr, flush=True)

        self.cleanup.callback(safely)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            self.console.say(f"({signal.Signals(signum).name}: still stopping, please wait)")
            return
        self.stop_reason = signal.Signals(signum).name
        self.stop_requested.set()
        if self.starting:
            self.stopping = True
            raise Interrupted

    # -- starting

    def _start(self, base: Config) -> None:
        say = self.console
        if self.options.backfill_days >= base.limits.retention_days:
            raise DemoError(f"--backfill-days must be below [limits] retention_days "
                            f"({base.limits.retention_days}): older events are dead-lettered")
        web_port = choose_port(self.options.web_port, DEFAULT_WEB_PORT, "worker's web server")
        prometheus_bin = self._prometheus_binary()
        prometheus_port = 0
        if prometheus_bin:
            prometheus_port = choose_port(self.options.prometheus_port, DEFAULT_PROMETHEUS_PORT,
                                          "Prometheus UI")
        for port, default, requested, what in (
                (web_port, DEFAULT_WEB_PORT, self.options.web_port, "the worker"),
                (prometheus_port, DEFAULT_PROMETHEUS_PORT, self.options.prometheus_port,
                 "Prometheus")):
            if port and requested is None and port != default:
                say.say(f"note: port {default} is taken, so {what} uses port {port}")
        parts = "one worker, synthetic CRM traffic" + (" and Prometheus" if prometheus_bin else "")
        say.say(f"kpi-engine demo: a local Kafka, {parts}; everything in {self._rel(self.dir)}")
        self._fresh_directory()

        say.step(f"Kafka: starting a local broker in {self._rel(self.dir / 'kafka')}")
        self.kafka = LocalKafka(self.dir / "kafka", progress=lambda m: say.detail(f"kafka: {m}"))
        self._stop_on_exit(self._stop_kafka)
        try:
            self.kafka.start()
        except KafkaLocalError as exc:
            raise DemoError(f"cannot start Kafka: {exc}") from None
        self.tokens = DemoTokens.create(self.dir)
        self.config = config = demo_config(base, self.kafka.bootstrap, web_port,
                                           self.dir / "worker", self.tokens.tokens_file,
                                           self.dir / "roster.toml")

        say.step("topics: creating the input and dead-letter topics")
        self._create_topics(config)

        self.config_path.write_text(config_toml(config))
        say.step(f"config: wrote {self._rel(self.config_path)} ({config.calendar.timezone}, "
                 f"{config.money.currency}, {len(config.pipeline.stages)} pipeline stages, "
                 f"{len(config.targets)} targets, worker web port "
                 f"{web_port})")

        self._backfill(config)

        say.step(f"worker: starting kpi-engine worker (log: {self._rel(self.dir / 'worker.log')})")
        self.worker = ChildProcess("worker", [
            sys.executable, "-m", "engine.cli", "worker", "--config", str(self.config_path),
            "--log-level", "info"], self.dir / "worker.log")
        self._stop_on_exit(self._stop_worker)
        started = time.monotonic()
        self.worker.start()
        self._record_pids()
        self._wait_worker_ready()
        say.detail(f"worker: ready in {time.monotonic() - started:.1f}s (pid {self.worker.pid})")

        if prometheus_bin:
            self._start_prometheus(prometheus_bin, prometheus_port, web_port)

        say.step(f"live traffic: {self.options.rate:g} events/s to {config.topics.input}, "
                 "stamped now")
        self.feed = LiveFeed(config, self.options.rate, self.options.seed)
        self._stop_on_exit(self._stop_feed)
        self.feed.start()

    def _prometheus_binary(self) -> str | None:
        if not self.options.prometheus:
            return None
        binary = shutil.which("prometheus")
        if binary is None:
            self.console.say("note: 'prometheus' is not installed (apt-get install prometheus), "
                             "so the demo runs without it")
            self.console.steps -= 1
        return binary

    def _fresh_directory(self) -> None:
        """Stop what an earlier, killed demo left running here, then start from an empty dir."""
        recorded = _recorded_pids(self.pids_path)
        demo_pid = recorded.get("demo")
        if demo_pid and demo_pid != os.getpid() and _cmdline_has(demo_pid, "demo"):
            raise DemoError(f"another demo (pid {demo_pid}) is running in {self._rel(self.dir)}; "
                            f"stop it first (Ctrl-C in its terminal, or kill {demo_pid})")
        for name in ("worker", "prometheus"):
            pid = recorded.get(name)
            if pid and _cmdline_has(pid, str(self.dir)):
                self.console.say(f"stopping the {name} an earlier demo left running "
                                 f"(pid {pid})")
                _terminate(pid)
        kafka_state = read_state(self.dir / "kafka")
        if kafka_state and kafka_state.running:
            self.console.say(f"stopping the Kafka an earlier demo left running "
                             f"(pid {kafka_state.pid})")
            stop_pid(kafka_state.pid, Path(kafka_state.data_dir))
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self._record_pids()

    def _record_pids(self) -> None:
        pids = {"demo": os.getpid()}
        for child in (self.worker, self.prometheus):
            if child is not None and child.pid is not None:
                pids[child.name] = child.pid
        self.pids_path.write_text(json.dumps(pids) + "\n")

    def _create_topics(self, config: Config) -> None:
        from engine.kafka_client import ensure_topics

        topics = {config.topics.input: config.topics.partitions,
                  config.topics.dead_letter: config.topics.partitions}
        try:
            asyncio.run(ensure_topics(config.kafka, topics))
        except KafkaError as exc:
            raise DemoError(f"cannot create the topics: {exc!r}\n{self._kafka_log()}") from None
        self.console.detail("topics: " + ", ".join(
            f"{name} ({partitions} partitions)" for name, partitions in topics.items()))

    def _backfill(self, config: Config) -> None:
        from engine.tooling.generator import expected_events, history_lines
        from engine.producer import send_lines

        days = self.options.backfill_days
        if days <= 0:
            self.console.step("history: skipped (--backfill-days 0)")
            return
        end = datetime.now(UTC).replace(microsecond=0)
        start = end - timedelta(days=days)
        settings = backfill_settings(config, self.options.seed, start, end)
        wanted = expected_events(settings, start, end)
        self.console.step(f"history: generating the last {days:g} days (~{wanted:,} events, "
                          f"seed {settings.seed}) into {config.topics.input}")
        started = time.monotonic()
        try:
            result = asyncio.run(send_lines(history_lines(settings, start, end),
                                            topic=config.topics.input,
                                            kafka_config=config.kafka))
        except KafkaError as exc:
            raise DemoError(f"cannot send the history: {exc!r}\n{self._kafka_log()}") from None
        if result.failed:
            raise DemoError(f"Kafka refused {result.failed} history events: "
                            + "; ".join(result.errors))
        self.backfill_sent = result.sent
        self.console.detail(f"history: sent {result.sent:,} events in "
                            f"{time.monotonic() - started:.1f}s")

    def _wait_worker_ready(self) -> None:
        assert self.worker is not None and self.config is not None
        url = self._worker_url("/ready")
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while time.monotonic() < deadline:
            if self.worker.exited() is not None:
                raise self.worker.failure("the worker exited while starting")
            with contextlib.suppress(OSError):
                if _http_get(url, timeout=2)[0] == 200:
                    return
            time.sleep(0.5)
        raise DemoError(f"the worker was not ready at {url} within "
                        f"{WORKER_READY_SECONDS:g}s.\n{log_tail(self.worker.log_path)}")

    def _start_prometheus(self, binary: str, port: int, web_port: int) -> None:
        say = self.console
        rules = rule_files(say=lambda m: say.detail(f"Prometheus: {m}"))
        config_file = self.dir / "prometheus.yml"
        assert self.tokens is not None
        config_file.write_text(prometheus_config(f"127.0.0.1:{web_port}", rules,
                                                 credentials_file=self.tokens.metrics_file))
        say.step(f"Prometheus: starting on 127.0.0.1:{port}, scraping the worker every "
                 f"{SCRAPE_INTERVAL} with {len(rules)} rule file{'s' * (len(rules) != 1)} "
                 f"(log: {self._rel(self.dir / 'prometheus.log')})")
        self.prometheus = ChildProcess("prometheus", [
            binary, f"--config.file={config_file}",
            f"--storage.tsdb.path={self.dir / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{port}"], self.dir / "prometheus.log")
        self._stop_on_exit(self._stop_prometheus)
        started = time.monotonic()
        self.prometheus.start()
        self._record_pids()
        url = f"http://127.0.0.1:{port}/-/ready"
        deadline = time.monotonic() + PROMETHEUS_READY_SECONDS
        while time.monotonic() < deadline:
            if self.prometheus.exited() is not None:
                raise self.prometheus.failure("Prometheus exited while starting")
            with contextlib.suppress(OSError):
                if _http_get(url, timeout=2)[0] == 200:
                    say.detail(f"Prometheus: ready in {time.monotonic() - started:.1f}s "
                               f"(pid {self.prometheus.pid})")
                    self.prometheus_port = port
                    return
            time.sleep(0.25)
        raise DemoError(f"Prometheus was not ready at {url} within "
                        f"{PROMETHEUS_READY_SECONDS:g}s.\n{log_tail(self.prometheus.log_path)}")

    # -- running

    def _print_summary(self) -> None:
        say, web = self.console, self._worker_url("")
        say.say()
        assert self.tokens is not None
        tokens = self.tokens
        say.say("The demo is running (with authentication, as in production; docs/security.md):")
        say.say(f"  live wallboard      {web}/wallboard?token={tokens.wallboard}")
        say.say(f"  KPI report (JSON)   {web}/api/kpis")
        say.say(f"  Prometheus metrics  {web}/metrics")
        say.say(f"  readiness           {web}/ready")
        say.say(f"  executive token     {tokens.executive}")
        say.say(f"  metrics token       {tokens.metrics}")
        say.say(f"  token hashes        {self._rel(tokens.tokens_file)} (more: kpi-engine token "
                "new --help)")
        if self.prometheus is not None:
            prometheus = f"http://127.0.0.1:{self.prometheus_port}"
            say.say(f"  Prometheus UI       {prometheus}/graph")
        grafana = REPO_ROOT / "grafana"
        dashboards = sorted(grafana.rglob("*.json")) if grafana.is_dir() else []
        if dashboards:
            folder = self._rel(dashboards[0].parent)
            source = (f"a Prometheus data source at {prometheus}" if self.prometheus is not None
                      else "a Prometheus data source scraping the worker")
            say.say(f"  Grafana dashboards  {folder}/*.json ({len(dashboards)}): import them "
                    f"into Grafana with {source}")
        else:
            say.say(f"  Grafana dashboards  {self._rel(grafana)}/ (none there yet)")
        say.say(f"  config and logs     {self._rel(self.dir)}/")
        say.say()
        say.say(f"Try: curl -s -H 'Authorization: Bearer {tokens.executive}' {web}/api/kpis "
                "| python3 -m json.tool | less")
        if self.prometheus is not None:
            say.say(f"     or, in the Prometheus UI, query {self._example_query()}")
        when = (f"stops by itself after {self.options.duration:g}s, or "
                if self.options.duration else "")
        say.say(f"The demo {when}stops everything on Ctrl-C.")
        say.say()

    def _example_query(self) -> str:
        """A KPI recording rule when the worker exports KPI components, else a plain counter."""
        with contextlib.suppress(OSError):
            status, body = _http_get(self._worker_url("/metrics"),
                                     token=self.tokens.metrics if self.tokens else None)
            if status == 200 and re.search(rb"^kpi_revenue_won\b", body, re.MULTILINE):
                return 'kpi:revenue_won{period="month",offset="0",scope="company"}'
        return "rate(kpi_messages_consumed_total[1m])"

    def _watch(self) -> None:
        """Wait for a stop; fail as soon as a part dies. Reports the history's ingestion."""
        deadline = (time.monotonic() + self.options.duration
                    if self.options.duration else None)
        started = time.monotonic()
        caught_up = self.backfill_sent == 0
        next_progress = time.monotonic() + 10
        while not self.stop_requested.wait(1.0):
            self._check_parts()
            if not caught_up and time.monotonic() >= next_progress:
                consumed = self._consumed()
                if consumed is not None and consumed >= self.backfill_sent:
                    caught_up = True
                    self.console.say(f"history ingested: the worker has read {consumed:,} "
                                     f"messages, {time.monotonic() - started:.0f}s after start")
                elif consumed is not None:
                    self.console.say(f"ingesting history: {consumed:,} of "
                                     f"{self.backfill_sent:,} messages read")
                next_progress = time.monotonic() + 10
            if deadline is not None and time.monotonic() >= deadline:
                self.stop_reason = f"--duration {self.options.duration:g}s"
                break
        self.stopping = True
        self.console.say()
        self.console.say(f"stopping ({self.stop_reason}): live traffic, "
                         f"{'Prometheus, ' if self.prometheus else ''}worker, Kafka")

    def _check_parts(self) -> None:
        if self.worker is not None and self.worker.exited() is not None:
            raise self.worker.failure("the worker stopped unexpectedly")
        if self.prometheus is not None and self.prometheus.exited() is not None:
            raise self.prometheus.failure("Prometheus stopped unexpectedly")
        if self.kafka is not None:
            state = read_state(self.kafka.data_dir)
            if state is None or not state.running:
                raise DemoError(f"Kafka stopped unexpectedly.\n{self.kafka.log_excerpt()}")
        if self.feed is not None and self.feed.error is not None:
            raise DemoError(f"the live traffic generator failed: {self.feed.error!r}")

    def _consumed(self) -> int | None:
        """Messages the worker has read, from Prometheus when it runs (the worker's own
        ``/metrics`` is large and costs it CPU), else from the worker."""
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            if self.prometheus is not None:
                query = urllib.parse.urlencode({"query": "sum(kpi_messages_consumed_total)"})
                status, body = _http_get(
                    f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?{query}")
                return int(float(json.loads(body)["data"]["result"][0]["value"][1]))
            status, body = _http_get(self._worker_url("/metrics"), timeout=10)
            match = re.search(rb"^kpi_messages_consumed_total (\S+)$", body, re.MULTILINE)
            if status == 200 and match:
                return int(float(match.group(1)))
        return None

    # -- stopping, in reverse order (registered on self.cleanup)

    def _stop_feed(self) -> None:
        if self.feed is not None:
            self.feed.stop()
            failed = f", {self.feed.failed} failed" if self.feed.failed else ""
            self.console.detail(f"live traffic: stopped after {self.feed.sent:,} events{failed}")

    def _stop_prometheus(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop(PROMETHEUS_STOP_SECONDS)
            self.console.detail("Prometheus: stopped")

    def _stop_worker(self) -> None:
        if self.worker is not None:
            code = self.worker.stop(WORKER_STOP_SECONDS)
            clean = "" if code == 0 else f" (exit status {code}; see {self.worker.log_path})"
            self.console.detail(f"worker: stopped{clean}")

    def _stop_kafka(self) -> None:
        if self.kafka is not None and self.kafka.pid is not None:
            self.kafka.stop()
            self.console.detail("Kafka: stopped")

    # -- small things

    def _kafka_log(self) -> str:
        return self.kafka.log_excerpt() if self.kafka is not None else ""

    def _worker_url(self, path: str) -> str:
        assert self.config is not None
        return f"http://127.0.0.1:{self.config.worker.web_port}{path}"

    def _rel(self, path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd()))
        return str(path)


def _recorded_pids(path: Path) -> dict[str, int]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _terminate(pid: int, timeout: float = 20.0) -> None:
    """Stop ``pid`` and its process group: SIGTERM, then SIGKILL after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)
