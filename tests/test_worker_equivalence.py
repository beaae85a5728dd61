"""The live worker's numbers equal the file report's, number by number, also across crashes.

One realistic file (``kpi-engine generate`` with redeliveries and invalid messages, and with
stages configured: the v2 pipeline traffic — stage moves, slips, owner changes, re-opens) is
sent to
Kafka with ``kpi-engine produce`` and read by real ``kpi-engine worker`` processes. Then:

- ``GET /api/kpis?as_of=X`` equals ``kpi-engine report --events FILE --as-of X`` for several
  instants X, compared as the acceptance checks compare (``reportdiff``), ``events`` included;
- the same after a ``kill -9`` in the middle of the stream and a restart: redone work must be
  recognised (no inflated ``duplicate``), and the ``duplicate`` and ``invalid`` counts must
  come back from durable state;
- with two workers, the KPI component gauges of both ``/metrics`` add up to the totals, and
  after one stops, the other alone shows the totals. Gauges are computed at the wall clock,
  so the totals are those of the file's events at the same clock (``KpiCollector`` over the
  file's core), and a comparison that straddles a window boundary is repeated.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from reportdiff import diff_reports
from test_ingest_e2e import WorkerProcess
from web_access import WebAccess

from engine.calendar import REPORT_WINDOWS, Calendar
from engine.collector import PREFIX, KpiCollector
from engine.components import UNITS
from engine.config import load_config
from engine.kafka_client import client_kwargs
from engine.kafka_local import LocalKafka, ensure_kafka_jars, find_java, free_port
from engine.producer import send_lines
from engine.replay import replay_file
from engine.timestamps import now_micros
from streams.replicas import GRACE_SECONDS as REPLICA_GRACE_SECONDS
from streams.replicas import REFRESH_SECONDS as REPLICA_REFRESH_SECONDS
from streams.topics import changelog_topic_config, changelog_topic_name

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
EVENTS = 12_000
COMPONENT_GAUGES = frozenset(PREFIX + name for name in UNITS)
REL_TOL = 1e-9
#: Fetch rate of the worker that joins in test_every_worker_answers_for_the_whole_company.
THROTTLED_BYTES_PER_SECOND = 200_000


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def generate_events(tmp_path_factory: pytest.TempPathFactory, seed: int, events: int) -> Path:
    """``events`` generated over the last 60 days, 2 % redeliveries, 1 % invalid messages."""
    folder = tmp_path_factory.mktemp("events")
    config = folder / "generate.toml"
    config.write_text(CALENDAR)
    path = folder / "events.jsonl"
    _cli("generate", "--seed", str(seed), "--days", "60", "--events", str(events),
         "--duplicates", "0.02", "--invalid", "0.01", "--config", str(config),
         "--out", str(path))
    return path


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~12k events over the last 60 days, 2 % redeliveries, 1 % invalid messages."""
    return generate_events(tmp_path_factory, 23, EVENTS)


CALENDAR = """
[calendar]
timezone = "Europe/Berlin"
week_start = "sunday"
fiscal_year_start_month = 4
[money]
currency = "EUR"
gross_margin = 0.8
[[targets]]
kpi = "revenue_won"
period = "month"
value = 50000
[[targets]]
kpi = "pipeline_weighted"
period = "quarter"
value = 80000
team = "dach"
[[pipeline.stages]]
id = "discovery"
probability = 0.1
category = "pipeline"
[[pipeline.stages]]
id = "proposal"
probability = 0.4
category = "best_case"
[[pipeline.stages]]
id = "negotiation"
probability = 0.7
category = "commit"
"""


class Setup:
    """A fresh app and topics on the session broker, and the worker processes started."""

    def __init__(self, broker: str, unique_name: Callable[[str], str], tmp_path: Path,
                 events_file: Path, web: WebAccess) -> None:
        self.events_file = events_file
        self.web = web
        self.lines = sum(1 for line in events_file.read_bytes().splitlines() if line.strip())
        self.tmp_path = tmp_path
        self.port = free_port()
        self.config_path = tmp_path / "worker.toml"
        # [worker] stays last: a test appends keys to it
        self.config_path.write_text(CALENDAR + web.config_toml() + f"""
[kafka]
bootstrap_servers = "{broker}"
[topics]
input = "{unique_name('in')}"
dead_letter = "{unique_name('dlq')}"
partitions = {PARTITIONS}
[worker]
app_id = "{unique_name('app')}"
data_dir = "{tmp_path / 'data'}"
web_host = "127.0.0.1"
web_port = {self.port}
""")
        self.config = load_config(self.config_path)
        self.workers: list[WorkerProcess] = []
        self._file_reports: dict[str, dict] = {}  # by as_of: the file does not change

    def worker(self, label: str, second: bool = False, index: int = 0) -> WorkerProcess:
        """Worker ``index`` (0: the configured port and data dir; ``second`` means index 1)."""
        args: tuple[str, ...] = ()
        port = self.port
        index = index or int(second)
        if index:
            port = free_port()
            data = self.tmp_path / ("data-2" if index == 1 else f"data-{index + 1}")
            args = ("--web-port", str(port), "--data-dir", str(data))
        worker = WorkerProcess(self.config_path, self.tmp_path / f"{label}.log", port,
                               args, web=self.web).start()
        self.workers.append(worker)
        return worker

    def produce(self, path: Path | None = None) -> None:
        _cli("produce", str(path or self.events_file), "--config", str(self.config_path))

    def file_report(self, as_of: str) -> dict:
        if as_of not in self._file_reports:
            self._file_reports[as_of] = orjson.loads(_cli(
                "report", "--events", str(self.events_file), "--as-of", as_of, "--config",
                str(self.config_path)))
        return self._file_reports[as_of]

    def close(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=30)


@pytest.fixture
def setup(kafka_broker, unique_name, tmp_path, events_file, web_access) -> Iterator[Setup]:
    s = Setup(kafka_broker.bootstrap, unique_name, tmp_path, events_file, web_access)
    yield s
    s.close()


def instants() -> list[str]:
    """Now (every event visible), 10 days ago and 40 days ago (many not visible yet)."""
    now = now_micros() // 1_000_000
    return [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - days * 86_400))
            for days in (0, 10, 40)]


def wait_all_accounted(setup: Setup, worker: WorkerProcess) -> None:
    worker.wait_until(lambda: worker.events().get("read") == setup.lines,
                      f"all {setup.lines} messages to be accounted for")


def assert_reports_equal(setup: Setup, worker: WorkerProcess) -> None:
    for as_of in instants():
        expected = setup.file_report(as_of)
        actual = worker.report(as_of)
        differences = diff_reports(actual, expected)
        assert not differences, (as_of, differences[:20])
        assert actual["events"]["duplicate"] > 0 and actual["events"]["invalid"] > 0
        month = next(w for w in actual["windows"] if (w["period"], w["offset"]) == ("month", 0))
        assert month["company"]["kpis"]["pipeline_deals"] > 0  # a living pipeline was compared


def test_the_live_report_equals_the_file_report(setup: Setup) -> None:
    worker = setup.worker("worker")
    worker.wait_ready()
    worker.web.assert_enforced(worker.base)
    setup.produce()
    wait_all_accounted(setup, worker)
    assert_reports_equal(setup, worker)
    assert worker.stop(signal.SIGTERM) == 0


def test_after_kill_9_mid_stream_and_a_restart_the_reports_are_still_equal(
        setup: Setup) -> None:
    lines = [line for line in setup.events_file.read_bytes().splitlines() if line.strip()]
    third = len(lines) // 3
    head, rest = setup.tmp_path / "head.jsonl", setup.tmp_path / "rest.jsonl"
    head.write_bytes(b"\n".join(lines[:third]) + b"\n")
    rest.write_bytes(b"\n".join(lines[third:]) + b"\n")

    worker = setup.worker("before-kill")
    worker.wait_ready()
    setup.produce(head)
    worker.wait_until(lambda: worker.events().get("read") == third, "the first third")
    producer = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "produce", str(rest), "--config",
         str(setup.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker.wait_until(lambda: worker.events().get("read", 0) > third,
                      "the worker to be busy with the rest")
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    assert producer.wait(timeout=120) == 0, producer.stderr.read() if producer.stderr else ""

    worker = setup.worker("after-kill")
    worker.wait_ready()
    wait_all_accounted(setup, worker)
    time.sleep(2)  # anything still in flight would show up now as a double count
    assert_reports_equal(setup, worker)
    log = (setup.tmp_path / "after-kill.log").read_text(errors="replace")
    assert "did not stop cleanly" in log
    # The local files are not ahead of Kafka (streams.local_state): reused, no cold recovery.
    assert "reusing the local table state" in log, log[-3000:]
    assert "discarding" not in log
    replays = worker.metrics().get(("kpi_replays_skipped_total", ()), 0)
    print(f"replayed items skipped after the restart: {replays:.0f}")
    assert worker.stop(signal.SIGTERM) == 0


def test_a_changelog_deleted_and_created_again_makes_a_crashed_worker_discard_its_files(
        setup: Setup) -> None:
    worker = setup.worker("before-kill")
    worker.wait_ready()
    setup.produce()
    wait_all_accounted(setup, worker)
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    changelog = changelog_topic_name(setup.config)
    asyncio.run(_recreate_topic(setup.config, changelog, PARTITIONS))

    worker = setup.worker("after-kill")
    worker.wait_ready()
    log = (setup.tmp_path / "after-kill.log").read_text(errors="replace")
    assert "did not stop cleanly" in log and "discarding" in log, log[-3000:]
    assert f"changelog {changelog!r} partition" in log and "ends at offset 0" in log
    assert "reusing the local table state" not in log
    assert worker.stop(signal.SIGTERM) == 0


async def _recreate_topic(config, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**client_kwargs(config.kafka))
    await admin.start()
    try:
        await admin.delete_topics([topic])
        for _ in range(150):
            response = await admin.create_topics([NewTopic(topic, partitions, 1,
                                                           topic_configs={
                **changelog_topic_config(config), "cleanup.policy": "compact"})])
            if response.topic_errors[0][1] == 0:
                return
            await asyncio.sleep(0.2)  # the deletion is still going on
        raise AssertionError(f"could not create {topic} again")
    finally:
        await admin.close()


def test_killed_before_its_first_offset_commit_a_worker_still_reads_every_bundle(
        setup: Setup) -> None:
    """Three times, a worker is killed right after its first apply round, before Faust's first
    offset commit (every 2.8 s): the restarted worker has no committed bundle offset to seek
    back to, and must still read every bundle it had not applied (streams/resume.py). Before
    the fix, Faust's drop-and-seek-back during recovery left about one restart in three at
    the end of the bundles topic, thousands of events short, forever."""
    producer = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "produce", str(setup.events_file), "--config",
         str(setup.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    read = 0
    for cycle in range(3):
        worker = setup.worker(f"cycle-{cycle}")
        worker.wait_ready()
        before = read
        worker.wait_until(lambda w=worker: (w.events().get("read") or 0) > before,
                          "a new apply round")
        read = worker.events().get("read") or 0
        assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
        if read == setup.lines:
            break
    assert producer.wait(timeout=120) == 0, producer.stderr.read() if producer.stderr else ""
    worker = setup.worker("after-the-kills")
    worker.wait_ready()
    wait_all_accounted(setup, worker)
    time.sleep(2)
    as_of = instants()[0]
    differences = diff_reports(worker.report(as_of), setup.file_report(as_of))
    assert not differences, differences[:20]
    assert worker.stop(signal.SIGTERM) == 0


# -- two workers ------------------------------------------------------------------------------

def component_samples(worker: WorkerProcess) -> dict[tuple[str, tuple], float]:
    status, body = worker.get("/metrics")
    assert status == 200
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name in COMPONENT_GAUGES:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def expected_samples(setup: Setup, core, at: int) -> dict[tuple[str, tuple], float]:
    collector = KpiCollector(lambda: [core], Calendar(setup.config.calendar), setup.config,
                             clock=lambda: at)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in collector.collect() for sample in family.samples
            if sample.name in COMPONENT_GAUGES}


def window_starts(setup: Setup, at: int) -> list[int]:
    calendar = Calendar(setup.config.calendar)
    return [calendar.window(period, offset, at).start for period, offset in REPORT_WINDOWS]


def assert_gauges_add_up(setup: Setup, core, workers: list[WorkerProcess]) -> None:
    """The summed component gauges of ``workers`` equal the totals of the file's events."""
    for _ in range(3):
        before = now_micros()
        scraped = [component_samples(worker) for worker in workers]
        after = now_micros()
        if window_starts(setup, before) != window_starts(setup, after):
            continue  # a window rolled over between the scrapes: scrape again
        total: dict[tuple[str, tuple], float] = {}
        for samples in scraped:
            for key, value in samples.items():
                total[key] = total.get(key, 0.0) + value
        expected = expected_samples(setup, core, after)
        nonzero = {k: v for k, v in total.items() if v}
        assert nonzero == pytest.approx({k: v for k, v in expected.items() if v}, rel=REL_TOL)
        return
    raise AssertionError("every scrape straddled a window boundary")


def partitions_of(worker: WorkerProcess) -> list[int]:
    status, body = worker.get("/ready")
    return orjson.loads(body)["partitions"] if status == 200 else []


def test_two_workers_gauges_add_up_to_the_totals_also_after_one_stops(setup: Setup) -> None:
    core = replay_file(setup.events_file, setup.config).core
    first = setup.worker("first")
    first.wait_ready()
    setup.produce()
    wait_all_accounted(setup, first)
    assert_gauges_add_up(setup, core, [first])

    second = setup.worker("second", second=True)

    def split() -> bool:
        a, b = partitions_of(first), partitions_of(second)
        return bool(a) and bool(b) and sorted(a + b) == list(range(PARTITIONS))

    second.wait_until(split, "both workers ready with the partitions split between them")
    assert_gauges_add_up(setup, core, [first, second])

    assert second.stop(signal.SIGTERM) == 0
    first.wait_until(lambda: partitions_of(first) == list(range(PARTITIONS)),
                     "the remaining worker to hold every partition")
    assert_gauges_add_up(setup, core, [first])
    assert_reports_equal(setup, first)
    assert first.stop(signal.SIGTERM) == 0


def answer_is_complete_or_names_what_is_missing(setup: Setup, worker: WorkerProcess,
                                                tally: dict[str, int]) -> bool:
    """Ask ``/api/events`` and ``/api/kpis`` once; True once both answer for everything.

    Every answer that claims to cover every partition (``missing: []``, or a plain ``200``
    from ``/api/kpis``) must count every message: the file was produced and accounted for
    before, so nothing is in flight and a partial count can only be a replica that is behind.
    """
    status, body = worker.get("/api/events")
    if status != 200:
        tally["refused"] += 1
        return False
    answer = orjson.loads(body)
    read = answer["events"]["read"]
    if answer["missing"]:
        tally["missing"] += 1
        return False
    assert read == setup.lines, (
        f"answered {read} of {setup.lines} messages with missing: [] "
        f"(partitions {answer['partitions']})")
    status, body = worker.get("/api/kpis")
    if status != 200:
        tally["refused"] += 1
        return False
    read = orjson.loads(body)["events"]["read"]
    assert read == setup.lines, f"/api/kpis answered {read} of {setup.lines} messages as whole"
    tally["complete"] += 1
    return True


def throttle_consumer(broker: LocalKafka, client_id: str, bytes_per_second: int) -> None:
    """A Kafka client quota: fetches of ``client_id`` get at most ``bytes_per_second``."""
    args = [find_java(), "-cp", f"{ensure_kafka_jars(broker.version, broker.cache_dir)}/*",
            "kafka.admin.ConfigCommand", "--bootstrap-server", broker.bootstrap, "--alter",
            "--add-config", f"consumer_byte_rate={bytes_per_second}", "--entity-type",
            "clients", "--entity-name", client_id]
    if broker.secure is not None:
        args += ["--command-config", str(broker.secure.admin_properties)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_worker_answers_for_the_whole_company(setup: Setup, kafka_broker,
                                                    monkeypatch) -> None:
    """Two workers: each one's /api/kpis equals the file report (its own partitions and its
    standby replicas of the others'); before, each answered only for its own partitions
    (about two thirds of the values right).

    And an answer without ``missing`` is complete: the second worker is asked continuously from
    its start, while its replicas of the first worker's partitions are still reading their
    changelog. Its fetches are throttled (a client quota), so that it reads the changelog for
    seconds, as on a slow broker: Faust reads the standby partitions after the active ones, so
    the worker is ready, and answers, while its replicas are still behind. Before, a replica
    was served as soon as it was built from whatever the local store held (in CI, 3,768 of
    11,396 messages were answered with ``missing: []``).
    """
    first = setup.worker("first")
    first.wait_ready()
    setup.produce()
    wait_all_accounted(setup, first)
    slow = f"kpi-slow-{setup.config.worker.app_id}"
    throttle_consumer(kafka_broker, slow, THROTTLED_BYTES_PER_SECOND)
    monkeypatch.setenv("KPI_KAFKA_CLIENT_ID", slow)
    second = setup.worker("second", second=True)
    monkeypatch.delenv("KPI_KAFKA_CLIENT_ID")
    tally = {"refused": 0, "missing": 0, "complete": 0}
    deadline = time.monotonic() + 120
    while tally["complete"] < 20:  # asked ~100 times a second, through the rebalance
        assert time.monotonic() < deadline, f"no complete answers in 120 s: {tally}"
        assert second.process is not None and second.process.poll() is None, second.log_tail()
        try:
            answer_is_complete_or_names_what_is_missing(setup, second, tally)
            time.sleep(0.01)
        except OSError:
            time.sleep(0.05)  # not listening yet
    print(f"second worker's answers from its start: {tally}")

    def split() -> bool:
        a, b = partitions_of(first), partitions_of(second)
        return bool(a) and bool(b) and sorted(a + b) == list(range(PARTITIONS))

    second.wait_until(split, "both workers ready with the partitions split between them")
    for worker in (first, second):
        worker.wait_until(
            lambda w=worker: answer_is_complete_or_names_what_is_missing(setup, w, tally),
            "an answer for every partition")
        status, body = worker.get("/api/events")
        assert status == 200 and orjson.loads(body)["missing"] == []
        assert sorted(orjson.loads(body)["partitions"]) == list(range(PARTITIONS))
        assert_reports_equal(setup, worker)
    # A partial answer is never silent: a missing partition is named, or the answer refused.
    status, body = first.get("/api/kpis?partial=1")
    assert status == 200
    for worker in (first, second):
        assert worker.stop(signal.SIGTERM) == 0


def missing_of(worker: WorkerProcess) -> list[int]:
    """The partitions ``/api/events`` names missing (all of them while it refuses)."""
    status, body = worker.get("/api/events")
    return orjson.loads(body)["missing"] if status == 200 else list(range(PARTITIONS))


#: The paced part of test_under_live_traffic_every_worker_answers_for_every_partition.
LIVE_RATE = 400  # messages a second
LIVE_SECONDS = 12
#: Of the answers asked while events arrive, at least this share must cover every partition.
LIVE_COMPLETE_SHARE = 0.9


def test_under_live_traffic_every_worker_answers_for_every_partition(setup: Setup) -> None:
    """Two workers, each with a replica of the other's partitions, asked ~10 times a second
    while events arrive steadily: their answers cover every partition (``missing: []``),
    not only once the stream is over; afterwards they equal the file report. A replica counts
    as current with everything its changelog held one end-offset check before
    (``streams.replicas.GRACE_SECONDS``), so the rounds its owner wrote in the last moment do
    not make it *missing*. (Measured when this was written: 0 of ~100 answers per worker
    named a partition missing, with the strict rule too; this guards the property.)"""
    first = setup.worker("first")
    first.wait_ready()
    second = setup.worker("second", second=True)

    def split() -> bool:
        a, b = partitions_of(first), partitions_of(second)
        return bool(a) and bool(b) and sorted(a + b) == list(range(PARTITIONS))

    second.wait_until(split, "both workers ready with the partitions split between them")
    lines = [line for line in setup.events_file.read_bytes().splitlines() if line.strip()]
    paced, rest = lines[:LIVE_RATE * LIVE_SECONDS], lines[LIVE_RATE * LIVE_SECONDS:]
    for worker in (first, second):  # empty, but whole: both replicas are current
        worker.wait_until(lambda w=worker: not missing_of(w),
                          "an answer for every partition before the traffic")

    async def paced_lines() -> AsyncIterator[bytes]:
        started = time.monotonic()
        for i, line in enumerate(paced):
            ahead = started + i / LIVE_RATE - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            yield line

    def send(source: Iterable[bytes] | AsyncIterable[bytes]) -> None:
        result = asyncio.run(send_lines(source, topic=setup.config.topics.input,
                                        kafka_config=setup.config.kafka))
        assert result.failed == 0, result.errors

    sender = threading.Thread(target=send, args=(paced_lines(),))
    sender.start()
    time.sleep(2)  # the first rounds are written and being replicated
    answers = {"first": {"complete": 0, "missing": 0}, "second": {"complete": 0, "missing": 0}}
    while sender.is_alive():
        for label, worker in (("first", first), ("second", second)):
            missing = missing_of(worker)
            answers[label]["missing" if missing else "complete"] += 1
        time.sleep(0.1)
    sender.join()
    print(f"answers while {LIVE_RATE} messages a second arrived: {answers}")
    for label, tally in answers.items():
        asked = tally["complete"] + tally["missing"]
        assert asked >= 2 * LIVE_SECONDS, tally
        assert tally["complete"] >= LIVE_COMPLETE_SHARE * asked, (
            f"the {label} worker named a partition missing in {tally['missing']} of {asked} "
            "answers while events arrived")
    send(rest)
    wait_all_accounted(setup, first)
    for worker in (first, second):
        worker.wait_until(lambda w=worker: answer_is_complete_or_names_what_is_missing(
            setup, w, {"refused": 0, "missing": 0, "complete": 0}), "a complete answer")
        assert_reports_equal(setup, worker)
        assert worker.stop(signal.SIGTERM) == 0


def test_three_workers_each_answer_for_everything_and_the_rest_still_do_after_one_leaves(
        setup: Setup) -> None:
    """Three workers with two standby replicas each: every worker's /api/kpis equals the file
    report. Then one stops; the two left never give a partial answer as whole, and within the
    documented time (its 20 s session, then the takeover: docs/reliability.md) they own every
    partition between them and still answer completely."""
    with open(setup.config_path, "a") as config:
        config.write("standby_replicas = 2\n")
    workers = [setup.worker(f"worker-{i}", index=i) for i in range(3)]
    for worker in workers:
        worker.wait_ready()
    setup.produce()
    wait_all_accounted(setup, workers[0])
    # every replica's end offsets, as far back as it is judged by, now include the last record
    time.sleep(REPLICA_GRACE_SECONDS + 2 * REPLICA_REFRESH_SECONDS)
    tally = {"refused": 0, "missing": 0, "complete": 0}
    for worker in workers:
        worker.wait_until(lambda w=worker: answer_is_complete_or_names_what_is_missing(
            setup, w, tally), "a complete answer from every worker")
        assert_reports_equal(setup, worker)

    leaving = workers.pop()
    stopped = time.monotonic()
    assert leaving.stop(signal.SIGTERM) == 0

    def taken_over() -> bool:
        complete = all(answer_is_complete_or_names_what_is_missing(setup, w, tally)
                       for w in workers)
        owned = sorted(p for w in workers for p in partitions_of(w))
        return complete and owned == list(range(PARTITIONS))

    workers[0].wait_until(taken_over, "the two left to own every partition and answer")
    took = time.monotonic() - stopped
    print(f"three workers, one stopped: the other two own everything after {took:.1f} s; "
          f"answers {tally}")
    assert took < 20 + 40, f"the takeover took {took:.0f} s (documented: the 20 s session)"
    for worker in workers:
        assert_reports_equal(setup, worker)
        assert worker.stop(signal.SIGTERM) == 0
