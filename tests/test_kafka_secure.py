"""Kafka security run for real: a SASL_SSL broker (SCRAM-SHA-512, a CA made at run time, ACLs).

The worker, with authentication on its web endpoints too, reads the input with its own
principal and nothing more, and its ``/api/kpis`` equals the file report; the CLI produces
with another principal. A wrong password, an untrusted certificate, a listener speaking
another protocol and a missing ACL each end in an error that names the cause, not a hang.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from reportdiff import diff_reports
from test_ingest_e2e import WorkerProcess

from engine.config import ConfigError, config_from_mapping, load_config
from engine.kafka_client import (
    KafkaAccessError,
    create_producer,
    ensure_topics,
    wait_for_broker,
)
from engine.kafka_local import LocalKafka, free_port
from engine.kafka_secure import BrokerSecurity, gateway_acls, producer_acls, worker_acls
from engine.security.ca import LocalCA
from engine.security.tokens import TokenEntry, format_token_line, new_token, token_hash

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BASE = """
[calendar]
timezone = "Europe/Berlin"
fiscal_year_start_month = 4
[money]
currency = "EUR"
[topics]
input = "sec.events"
dead_letter = "sec.events.dlq"
partitions = 2
[worker]
app_id = "kpi-sec"
"""


GATEWAY_STATE_TOPIC = "sec.gateway.state"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    config = config_from_mapping({"topics": {"input": "sec.events",
                                             "dead_letter": "sec.events.dlq"},
                                  "worker": {"app_id": "kpi-sec"},
                                  "gateway": {"state_topic": GATEWAY_STATE_TOPIC}})
    security = BrokerSecurity.with_users(
        "worker", "producer", "intruder", "gateway",
        acls=[*worker_acls("worker", config), *producer_acls("producer", config),
              *gateway_acls("gateway", config)])
    with LocalKafka(tmp_path_factory.mktemp("secure-kafka"), security=security) as kafka:
        yield kafka


def test_a_wrong_password_is_an_error_naming_the_cause_not_a_hang(broker: LocalKafka) -> None:
    config = broker.client_config("worker", password="not-the-password")
    started = time.monotonic()
    with pytest.raises(KafkaAccessError, match="refused the credentials of SASL user 'worker'"
                       ) as info:
        run(wait_for_broker(config, timeout=60))
    assert "not-the-password" not in str(info.value)
    assert time.monotonic() - started < 30  # not the 60 s of a broker that never answers


def test_an_untrusted_broker_certificate_is_an_error_naming_the_cause(broker: LocalKafka,
                                                                      tmp_path: Path) -> None:
    stranger = LocalCA(tmp_path / "other-ca")
    config = replace(broker.client_config("worker"), ssl_cafile=str(stranger.certfile))
    with pytest.raises(KafkaAccessError, match="certificate of the Kafka broker .* not trusted"):
        run(wait_for_broker(config, timeout=60))


def test_another_protocol_than_the_listener_speaks_is_named(broker: LocalKafka) -> None:
    config = replace(broker.client_config("worker"), security_protocol="SASL_PLAINTEXT",
                     sasl_mechanism="SCRAM-SHA-512", ssl_cafile=None)
    with pytest.raises(KafkaAccessError, match="another security_protocol than SASL_PLAINTEXT"):
        run(wait_for_broker(config, timeout=60))


def test_a_principal_without_acls_gets_authorization_errors_naming_the_topic(
        broker: LocalKafka) -> None:
    intruder = broker.client_config("intruder")
    run(wait_for_broker(intruder, timeout=30))  # authenticated, but allowed nothing
    with pytest.raises(TopicAuthorizationFailedError, match="sec.events"):
        run(ensure_topics(intruder, {"sec.events": 2}))

    async def write(config, topic: str) -> None:
        producer = await create_producer(config, request_timeout_ms=10_000)
        try:
            await producer.send_and_wait(topic, b"{}")
        finally:
            await producer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        run(write(intruder, "sec.events"))
    # the worker's own principal only reads the input, and touches no other app's topics
    with pytest.raises(TopicAuthorizationFailedError):
        run(write(broker.client_config("worker"), "sec.events"))
    with pytest.raises(TopicAuthorizationFailedError):
        run(write(broker.client_config("worker"), "other-app-bundles"))


def test_only_working_sasl_settings_are_accepted_and_secrets_stay_out_of_reprs() -> None:
    kafka = {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "s3cret"}
    for mechanism, message in (("GSSAPI", "not supported"), ("OAUTHBEARER", "not supported"),
                               ("SCRAM-SHA-1", "not supported")):
        with pytest.raises(ConfigError, match=message):
            config_from_mapping({"kafka": {**kafka, "sasl_mechanism": mechanism}})
    with pytest.raises(ConfigError, match="clear text"):
        config_from_mapping({"kafka": {**kafka, "security_protocol": "SASL_PLAINTEXT",
                                       "sasl_mechanism": "PLAIN"}})
    with pytest.raises(ConfigError, match="sasl_username"):
        config_from_mapping({"kafka": {"security_protocol": "SASL_SSL",
                                       "sasl_mechanism": "SCRAM-SHA-512"}})
    with pytest.raises(ConfigError, match="security_protocol is PLAINTEXT"):
        config_from_mapping({"kafka": {"sasl_mechanism": "SCRAM-SHA-512"}})
    config = config_from_mapping({"kafka": {**kafka, "sasl_mechanism": "SCRAM-SHA-512"}})
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _kafka_section(config, password_file: Path | None = None) -> str:
    lines = [f'bootstrap_servers = "{config.bootstrap_servers}"',
             f'security_protocol = "{config.security_protocol}"',
             f'sasl_mechanism = "{config.sasl_mechanism}"',
             f'sasl_username = "{config.sasl_username}"',
             f'ssl_cafile = "{config.ssl_cafile}"']
    if password_file is not None:
        password_file.write_text(config.sasl_password + "\n")
        lines.append(f'sasl_password_file = "{password_file}"')
    else:
        lines.append(f'sasl_password = "{config.sasl_password}"')
    return "[kafka]\n" + "\n".join(lines) + "\n"


def test_the_worker_on_sasl_ssl_with_acls_and_tokens_equals_the_file_report(
        broker: LocalKafka, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    calendar = tmp_path / "calendar.toml"
    calendar.write_text(BASE)
    _cli("generate", "--seed", "5", "--days", "30", "--events", "3000", "--duplicates", "0.02",
         "--invalid", "0.01", "--config", str(calendar), "--out", str(events))
    lines = sum(1 for line in events.read_bytes().splitlines() if line.strip())
    token = new_token()
    port = free_port()
    worker_config = tmp_path / "worker.toml"
    worker_config.write_text(
        BASE + f'data_dir = "{tmp_path / "data"}"\nweb_port = {port}\n'
        + _kafka_section(broker.client_config("worker"), tmp_path / "worker.password")
        + "[auth]\ntokens = [\"" + format_token_line(TokenEntry(
            sha256=token_hash(token), audience="executive")) + "\"]\n")
    producer_config = tmp_path / "producer.toml"
    producer_config.write_text(BASE + _kafka_section(broker.client_config("producer")))
    assert load_config(worker_config).kafka.sasl_password_file

    worker = WorkerProcess(worker_config, tmp_path / "worker.log", port).start()
    try:
        worker.wait_ready()
        assert worker.get("/api/kpis")[0] == 401
        worker.token = token
        _cli("produce", str(events), "--config", str(producer_config))
        worker.wait_until(lambda: worker.events().get("read") == lines,
                          f"all {lines} messages to be accounted for")
        as_of = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        expected = orjson.loads(_cli("report", "--events", str(events), "--as-of", as_of,
                                     "--config", str(calendar)))
        assert not diff_reports(worker.report(as_of), expected)
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert broker.client_config("worker").sasl_password not in log
    finally:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.terminate()
            worker.process.wait(timeout=60)


def test_the_worker_with_a_wrong_password_exits_naming_the_cause(broker: LocalKafka,
                                                                 tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(BASE + f'data_dir = "{tmp_path / "data"}"\nweb_port = {free_port()}\n'
                      + _kafka_section(broker.client_config("worker", password="wrong")))
    done = subprocess.run([sys.executable, "-m", "engine.cli", "worker", "--config",
                           str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "refused the credentials of SASL user 'worker'" in done.stderr
    assert "wrong" not in done.stderr.replace("wrong username", "")


def test_kafka_start_sasl_ssl_writes_client_sections_that_work(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    cli = [sys.executable, "-m", "engine.cli", "kafka"]
    done = subprocess.run([*cli, "start", "--sasl-ssl", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=300)
    try:
        assert done.returncode == 0, done.stderr
        section = data / "tls" / "worker.toml"
        assert f"[kafka] for worker: {section}" in done.stderr
        assert section.stat().st_mode & 0o077 == 0
        kafka = load_config(section).kafka
        assert (kafka.security_protocol, kafka.sasl_username) == ("SASL_SSL", "worker")
        assert kafka.sasl_password is None and kafka.sasl_password_file
        run(wait_for_broker(kafka, timeout=30))
        again = subprocess.run([*cli, "stop", "--data-dir", str(data)], capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 0
        again = subprocess.run([*cli, "start", "--sasl-ssl", "--data-dir", str(data)],
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 1 and "needs a new data directory" in again.stderr
    finally:
        subprocess.run([*cli, "stop", "--data-dir", str(data)], capture_output=True,
                       timeout=120)


@pytest.mark.parametrize("command", ["produce", "generate"])
def test_the_cli_with_a_wrong_password_says_so(broker: LocalKafka, tmp_path: Path,
                                               command: str) -> None:
    config = tmp_path / "producer.toml"
    config.write_text(BASE + _kafka_section(broker.client_config("producer", password="nope")))
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n")
    args = ([str(events)] if command == "produce"
            else ["--kafka", "--days", "1", "--events", "10"])
    done = subprocess.run([sys.executable, "-m", "engine.cli", command, *args, "--config",
                           str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "refused the credentials of SASL user 'producer'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_gateway_works_with_its_own_acls_and_nothing_more(broker: LocalKafka,
                                                               tmp_path: Path) -> None:
    """docker-compose.yml runs the gateway as User:gateway with engine.kafka_secure's
    gateway_acls: enough to create and read back its HubSpot state topic and to produce
    accepted events and dead letters, and no reading of the input."""
    from gateway_fixtures import basic_auth, hubspot_event, pipedrive_deal, pipedrive_delivery
    from gateway_helpers import gateway_raw
    from gateway_runner import GatewayThread, events_of, read_topic
    from test_gateway_e2e import hubspot_post

    raw = gateway_raw(tmp_path)
    raw["topics"] = {"input": "sec.events", "dead_letter": "sec.events.dlq", "partitions": 2}
    raw["gateway"]["state_topic"] = GATEWAY_STATE_TOPIC
    raw["gateway"]["kafka_timeout_seconds"] = 10
    config = replace(config_from_mapping(raw), kafka=broker.client_config("gateway"))
    pd = basic_auth("kpi", "pd-pass")
    t0 = 1_772_442_000_000
    with GatewayThread(config) as gw:  # started: the state topic is created and read back
        assert gw.post("/hooks/pipedrive", pipedrive_delivery(
            "create", pipedrive_deal(41)), pd)[0] == 200
        assert gw.post("/hooks/pipedrive", pipedrive_delivery(
            "create", pipedrive_deal(42, owner=999)), pd)[0] == 200  # dead-lettered
        assert hubspot_post(gw, [hubspot_event("deal.creation", 4242, t0),
                                 hubspot_event("deal.propertyChange", 4242, t0,
                                               "hubspot_owner_id", "41629780")])[0] == 200
    admin = broker.client_config()
    # (other tests of this module write the input too, not all of it JSON)
    ours = [r for r in read_topic(None, "sec.events", 30, admin) if b"-deal-" in r.value]
    deals = {e.get("deal_id") for e in events_of(ours)}
    assert {"pipedrive-deal-41", "hubspot-deal-4242"} <= deals
    dead = read_topic(None, "sec.events.dlq", 30, admin)
    assert any(dict(r.headers).get("kpi-reason") == b"unknown_user" for r in dead)
    # what it may not do: read the input (the workers' business)
    with pytest.raises(TopicAuthorizationFailedError):
        read_topic(None, "sec.events", 10, broker.client_config("gateway"))


def test_the_dead_letter_watch_repairs_the_topic_with_the_workers_own_acls(
        broker: LocalKafka) -> None:
    """The worker's ACLs let its dead-letter watch do what docs/reliability.md says it does:
    read the topic's configs, add the partitions a topic the broker auto-created lacks, and
    set its configs again (before: ``WRITE``, ``DESCRIBE``, ``CREATE`` only, so a topic
    auto-created with one partition stayed so, and the dead letters for the others waited)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from engine.kafka_client import client_kwargs, ensure_topics
    from streams.dead_letter_topic import DeadLetterTopicWatch
    from streams.topics import topic_configs

    topic = "sec.events.dlq"
    config = replace(config_from_mapping({"topics": {"input": "sec.events", "dead_letter": topic,
                                                     "partitions": 2},
                                          "worker": {"app_id": "kpi-sec"}}),
                     kafka=broker.client_config("worker"))
    admin_config = broker.client_config()

    async def as_admin(action) -> None:
        admin = AIOKafkaAdminClient(**client_kwargs(admin_config))
        await admin.start()
        try:
            await action(admin)
        finally:
            await admin.close()

    async def until(watch: DeadLetterTopicWatch, partitions: int | None) -> None:
        deadline = time.monotonic() + 30
        while await watch.partitions() != partitions:
            assert time.monotonic() < deadline, f"topic never showed {partitions} partitions"
            await asyncio.sleep(0.1)

    async def go() -> None:
        await ensure_topics(admin_config, {topic: 2}, 1, {topic: topic_configs(config)[topic]})
        watch = DeadLetterTopicWatch(config)
        await watch.on_start()
        try:
            assert (watch.partitions_seen, watch.configs_seen) == (2, True)
            await as_admin(lambda admin: admin.delete_topics([topic]))
            await until(watch, None)
            await as_admin(lambda admin: admin.create_topics([NewTopic(topic, 1, 1)]))
            await until(watch, 1)
            assert await watch.check() == "partitions added"
            await until(watch, 2)
            assert await watch._configs_set_on_topic()
            assert await watch.check() is None
        finally:
            await watch.on_stop()

    run(go())
