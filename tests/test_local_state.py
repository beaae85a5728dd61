"""The proof that a crashed worker's local table files are not ahead of Kafka, case by case.

Real broker, real RocksDB files written as the worker writes them (raw keys and values, the
persisted changelog offset under Faust's offset key): the files are reusable when the record
at their offset is theirs; not when the changelog ends before it, was deleted and created
again (also when it has grown past the old offset since), or the files do not open. The
worker's use of it (``kill -9``, a recreated changelog) is in ``test_worker_equivalence.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.config import config_from_mapping
from streams.local_state import OFFSET_KEY, local_state_problem
from streams.topics import changelog_topic_name

pytestmark = pytest.mark.kafka


async def _recreate(bootstrap: str, topic: str, *, delete: bool) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if delete:
            await admin.delete_topics([topic])
        for _ in range(100):
            response = await admin.create_topics([NewTopic(topic, 1, 1)])
            if all(code in (0, 36) for _, code, *_ in response.topic_errors) and (
                    not delete or response.topic_errors[0][1] == 0):
                return
            await asyncio.sleep(0.2)  # the deletion is still going on
        raise AssertionError(f"could not create {topic}")
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


def _local_files(tables: Path, records: list[tuple[bytes, bytes]], offset: int) -> None:
    from rocksdict import Options, Rdict

    tables.mkdir(parents=True, exist_ok=True)
    db = Rdict(str(tables / "ledger-0.db"), options=Options(raw_mode=True))
    for key, value in records:
        db[key] = value
    db[OFFSET_KEY] = str(offset).encode()
    db.close()


def test_local_files_are_reusable_only_when_the_changelog_record_at_their_offset_is_theirs(
        kafka_broker, unique_name, tmp_path) -> None:
    bootstrap = kafka_broker.bootstrap
    config = config_from_mapping({
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"input": unique_name("in"), "dead_letter": unique_name("dlq"),
                   "partitions": 1},
        "worker": {"app_id": unique_name("app")},
    })
    changelog = changelog_topic_name(config)
    ours = [(f"0|{i}".encode(), f"entries {i}".encode()) for i in range(5)]
    asyncio.run(_recreate(bootstrap, changelog, delete=False))
    asyncio.run(_produce(bootstrap, changelog, ours))

    def problem(tables: Path) -> str | None:
        return asyncio.run(local_state_problem(config, tables))

    crashed = tmp_path / "crashed"
    _local_files(crashed, ours, offset=4)
    assert problem(crashed) is None
    behind = tmp_path / "behind"  # crashed before the last records came back: still fine
    _local_files(behind, ours[:3], offset=2)
    assert problem(behind) is None

    ahead = tmp_path / "ahead"
    _local_files(ahead, ours, offset=7)
    assert "ends at offset 5" in problem(ahead)

    altered = tmp_path / "altered"  # same offset, another record there
    _local_files(altered, ours[:4] + [(b"0|4", b"something else")], offset=4)
    assert "not the one the local state holds" in problem(altered)

    broken = tmp_path / "broken"
    _local_files(broken, ours, offset=4)
    for name in (broken / "ledger-0.db").iterdir():
        if name.name.startswith(("CURRENT", "MANIFEST")):
            name.write_bytes(b"not rocksdb")
    assert "cannot be opened" in problem(broken)

    # The changelog deleted and created again: empty first, then grown past the old offsets
    # with other records (the same keys, other values: what a new app run would write).
    asyncio.run(_recreate(bootstrap, changelog, delete=True))
    assert "ends at offset 0" in problem(crashed)
    asyncio.run(_produce(bootstrap, changelog,
                         [(key, value + b" (new topic)") for key, value in ours + ours]))
    assert "deleted and created again" in problem(crashed)
