"""``kpi-engine produce`` and the producer helpers, against a real Kafka broker (no mocks)."""

from __future__ import annotations

import asyncio
import collections
import time
from datetime import datetime, timezone

import orjson
import pytest

from engine.cli import main
from engine.config import KafkaConfig
from engine.decode import parse_timestamp
from engine.tooling.generator import GeneratorSettings, history_lines
from engine.kafka_client import create_consumer
from engine.producer import entity_key, send_lines

SETTINGS = GeneratorSettings(seed=4, teams=2, reps_per_team=3, invalid=0.02, duplicates=0.01)
START = datetime(2025, 5, 1, tzinfo=timezone.utc)
END = datetime(2025, 6, 1, tzinfo=timezone.utc)


def _expected_key(value: bytes) -> bytes | None:
    """The key the SPEC asks for, written out independently of the producer's table."""
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    if kind in ("lead.created", "lead.qualified"):
        name = "lead_id"
    elif kind in ("deal.created", "deal.closed"):
        name = "deal_id"
    elif kind in ("subscription.started", "subscription.cancelled"):
        name = "customer_id"
    elif kind == "activity.logged":
        name = "rep_id"
    elif kind == "spend.recorded":
        name = "team_id" if "team_id" in event else "category"
    else:  # unknown type: the first entity-like id it has
        name = next((n for n in ("lead_id", "deal_id", "customer_id", "subscription_id",
                                 "rep_id", "team_id") if n in event), "")
    key = event.get(name)
    return key.encode() if isinstance(key, str) and key else None


async def _consume(bootstrap: str, topic: str, group: str, count: int,
                   timeout: float = 60.0) -> list:
    consumer = await create_consumer(KafkaConfig(bootstrap_servers=bootstrap), topic,
                                     group_id=group, auto_offset_reset="earliest")
    records: list = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for batch in batches.values():
                    records.extend(batch)
        extra = await consumer.getmany(timeout_ms=500)  # nothing beyond what was produced
        records.extend(r for batch in extra.values() for r in batch)
    finally:
        await consumer.stop()
    return records


def test_entity_key_follows_the_event_type() -> None:
    assert entity_key(b'{"type":"lead.qualified","lead_id":"ld-1","rep_id":"r"}') == b"ld-1"
    assert entity_key(b'{"type":"deal.closed","deal_id":"op-7","customer_id":"c"}') == b"op-7"
    assert entity_key(b'{"type":"subscription.started","subscription_id":"s",'
                      b'"customer_id":"acc-2"}') == b"acc-2"
    assert entity_key(b'{"type":"activity.logged","rep_id":"rep-003"}') == b"rep-003"
    assert entity_key(b'{"type":"spend.recorded","category":"sales"}') == b"sales"
    assert entity_key(b'{"type":"lead.deleted","deal_id":"op-1"}') == b"op-1"


@pytest.mark.parametrize("value", [b'{"type":"lead.created"', b"[1, 2]", b'"text"',
                                   b'{"type":"lead.created","lead_id":""}', b"\xff"])
def test_messages_without_an_entity_have_no_key(value: bytes) -> None:
    assert entity_key(value) is None


@pytest.mark.kafka
def test_produce_sends_every_line_as_is_keyed_by_entity(kafka_broker, unique_name, tmp_path,
                                                        capsys) -> None:
    lines = list(history_lines(SETTINGS, START, END))
    assert any(_expected_key(line) is None for line in lines)  # some invalid messages too
    events_file = tmp_path / "events.jsonl"
    # A blank line and a CRLF terminator, as files from other tools have them.
    events_file.write_bytes(b"\n".join(lines[:10]) + b"\n\n" + lines[10] + b"\r\n"
                            + b"\n".join(lines[11:]) + b"\n")
    config = tmp_path / "engine.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{kafka_broker.bootstrap}"\n'
                      '[topics]\npartitions = 3\n')
    topic = unique_name("produce")

    assert main(["produce", str(events_file), "--config", str(config), "--topic", topic]) == 0
    out = capsys.readouterr().out
    assert f"sent {len(lines)} messages to {topic}" in out

    records = asyncio.run(_consume(kafka_broker.bootstrap, topic, unique_name("group"),
                                   len(lines)))
    assert len(records) == len(lines)
    assert collections.Counter(r.value for r in records) == collections.Counter(lines)
    assert len({r.partition for r in records}) == 3
    for record in records:
        assert record.key == _expected_key(record.value)
    # One entity's events stay in file order (they share a partition).
    in_file: dict[bytes, list[bytes]] = collections.defaultdict(list)
    for line in lines:
        if (key := _expected_key(line)) is not None:
            in_file[key].append(line)
    consumed: dict[bytes, list[bytes]] = collections.defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.key is not None:
            consumed[record.key].append(record.value)
    assert consumed == in_file


@pytest.mark.kafka
def test_generate_sends_to_the_configured_input_topic(kafka_broker, unique_name,
                                                      tmp_path) -> None:
    topic = unique_name("input")
    config = tmp_path / "engine.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{kafka_broker.bootstrap}"\n'
                      f'[topics]\ninput = "{topic}"\npartitions = 2\n')
    args = ["generate", "--config", str(config), "--teams", "1", "--reps-per-team", "2",
            "--from", "2025-05-01", "--to", "2025-05-15"]
    assert main([*args, "--kafka"]) == 0
    expected = tmp_path / "expected.jsonl"
    assert main([*args, "--out", str(expected)]) == 0
    lines = expected.read_bytes().splitlines()
    records = asyncio.run(_consume(kafka_broker.bootstrap, topic, unique_name("group"),
                                   len(lines)))
    assert sorted(r.value for r in records) == sorted(lines)


@pytest.mark.kafka
def test_a_message_too_large_is_counted_as_failed_and_the_rest_is_sent(kafka_broker,
                                                                       unique_name) -> None:
    topic = unique_name("large")
    lines = [b'{"type":"lead.created","lead_id":"ld-1"}', b"x" * 5000,
             b'{"type":"lead.created","lead_id":"ld-2"}']
    result = asyncio.run(send_lines(lines, topic=topic, partitions=1, max_request_size=2000,
                                    kafka_config=KafkaConfig(kafka_broker.bootstrap)))
    assert (result.sent, result.failed, result.keyed) == (2, 1, 2)
    assert "MessageSizeTooLarge" in result.errors[0]
    records = asyncio.run(_consume(kafka_broker.bootstrap, topic, unique_name("group"), 2))
    assert [r.value for r in records] == [lines[0], lines[2]]


@pytest.mark.kafka
def test_live_generate_streams_to_kafka(kafka_broker, unique_name, tmp_path) -> None:
    topic = unique_name("live")
    config = tmp_path / "engine.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{kafka_broker.bootstrap}"\n')
    began = time.time()
    assert main(["generate", "--config", str(config), "--kafka", "--topic", topic,
                 "--rate", "200", "--count", "60"]) == 0
    records = asyncio.run(_consume(kafka_broker.bootstrap, topic, unique_name("group"), 60))
    assert len(records) == 60
    for record in records:
        stamp = parse_timestamp(orjson.loads(record.value)["occurred_at"]) / 1e6
        assert began - 1 < stamp < time.time()
        assert record.key == _expected_key(record.value)
