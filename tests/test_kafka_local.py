"""The local Kafka broker and the shared client helpers, against a real broker (no mocks)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from engine.commands.kafka import NOT_RUNNING
from engine.config import KafkaConfig
from engine.kafka_client import (
    client_kwargs,
    create_consumer,
    create_producer,
    ensure_topics,
    wait_for_broker,
)
from engine.kafka_local import KafkaLocalError, LocalKafka, ensure_kafka_jars, read_state

KPI_ENGINE = Path(sys.executable).parent / "kpi-engine"


def _alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except FileNotFoundError:
        return False


def _failing_mvn(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH directory whose ``mvn`` records that it was called and fails."""
    shim, marker = tmp_path / "shim", tmp_path / "mvn-was-called"
    shim.mkdir()
    (shim / "mvn").write_text(f"#!/bin/sh\n: > {marker}\nexit 1\n")
    (shim / "mvn").chmod(0o755)
    return shim, marker


@pytest.mark.kafka
def test_produce_and_consume_round_trip(kafka_broker, unique_name):
    config = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap)
    topic = unique_name("roundtrip")

    async def round_trip():
        await ensure_topics(config, {topic: 1})
        producer = await create_producer(config, acks="all")
        try:
            await producer.send_and_wait(topic, b'{"deal": 1}', key=b"acme")
        finally:
            await producer.stop()
        consumer = await create_consumer(config, topic, group_id=unique_name("group"),
                                         auto_offset_reset="earliest")
        try:
            return await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()

    message = asyncio.run(round_trip())
    assert (message.key, message.value) == (b"acme", b'{"deal": 1}')


@pytest.mark.kafka
def test_ensure_topics_is_idempotent_and_creates_the_partitions_asked(kafka_broker, unique_name):
    config = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap)
    three, one = unique_name("three"), unique_name("one")

    async def create_twice_and_describe():
        first = await ensure_topics(config, {three: 3, one: 1})
        second = await ensure_topics(config, {three: 3, one: 1})
        admin = AIOKafkaAdminClient(**client_kwargs(config))
        await admin.start()
        try:
            described = await admin.describe_topics([three, one])
        finally:
            await admin.close()
        return first, second, {t["topic"]: len(t["partitions"]) for t in described}

    first, second, partitions = asyncio.run(create_twice_and_describe())
    assert sorted(first) == sorted([three, one])
    assert second == []
    assert partitions == {three: 3, one: 1}


@pytest.mark.kafka
@pytest.mark.slow
def test_cli_start_status_stop_leaves_no_java_process(kafka_broker, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KPI_ENGINE), "kafka", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=180, check=False)

    data_dir = tmp_path / ".kpi-engine" / "kafka"  # the default, relative to the cwd
    try:
        started = cli("start")
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip()
        assert bootstrap.startswith("127.0.0.1:")
        state = read_state(data_dir)
        assert state is not None and state.bootstrap == bootstrap
        asyncio.run(wait_for_broker(bootstrap, timeout=10))
        assert cli("status").returncode == 0

        assert cli("stop").returncode == 0
        assert not _alive(state.pid)
        assert cli("status").returncode == NOT_RUNNING
        assert cli("stop").returncode == 0
    finally:
        subprocess.run([str(KPI_ENGINE), "kafka", "stop"], cwd=tmp_path,
                       capture_output=True, check=False)


@pytest.mark.kafka
@pytest.mark.slow
def test_second_start_with_a_warm_cache_does_not_call_maven(kafka_broker, tmp_path,
                                                           monkeypatch):
    shim, marker = _failing_mvn(tmp_path)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    with LocalKafka(tmp_path / "kafka", version=kafka_broker.version,
                    cache_dir=kafka_broker.cache_dir) as kafka:
        pid = kafka.pid
        asyncio.run(wait_for_broker(kafka.bootstrap, timeout=10))
    assert not marker.exists()
    assert pid is not None and not _alive(pid)


@pytest.mark.kafka
@pytest.mark.slow
def test_a_broker_that_cannot_start_reports_its_log(kafka_broker, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        kafka = LocalKafka(tmp_path / "kafka", port=taken.getsockname()[1],
                           cache_dir=kafka_broker.cache_dir)
        with pytest.raises(KafkaLocalError, match=r"(?s)exited.*Address already in use"):
            kafka.start()
    assert kafka.pid is None
    assert read_state(kafka.data_dir) is None


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaLocalError, match="Java is not installed"):
        LocalKafka(tmp_path / "kafka", cache_dir=tmp_path / "cache").start()


def test_missing_maven_on_a_cold_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaLocalError, match=r"Maven \('mvn'\) is not on PATH"):
        ensure_kafka_jars(cache_dir=tmp_path / "cache")


def test_a_failing_maven_is_a_clear_error(tmp_path, monkeypatch):
    shim, marker = _failing_mvn(tmp_path)
    monkeypatch.setenv("PATH", str(shim))
    with pytest.raises(KafkaLocalError, match="Maven could not resolve"):
        ensure_kafka_jars(cache_dir=tmp_path / "cache")
    assert marker.exists()
    assert not (tmp_path / "cache" / "lib" / ".complete").exists()
