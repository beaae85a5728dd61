"""May a worker that did not stop cleanly reuse its local table files? Only when provably safe.

Why: the changelog is the source of truth, and recovering a partition from it takes a while
with a lot of state (``docs/benchmarks.md``, recovery). The local RocksDB files of a worker
that crashed are normally fine: the apply stage puts a ledger record into the local store only
after Kafka acknowledged it (:meth:`streams.tables.LedgerTable.store_acknowledged`, with the
record's changelog offset as the store's persisted offset), and Faust's own recovery writes
what it read from the changelog, with its offset. So the files cannot be ahead of Kafka by
construction. What can still make them unsafe, and what is checked, per changelog partition
with local files:

1. the files open (RocksDB, read-only, after a crash);
2. the persisted changelog offset is below the changelog partition's end offset (a topic
   deleted and created again, or truncated, starts its offsets again);
3. the changelog record at that offset is the one the local store holds: same key, and the
   stored value is the record's value (absent for a tombstone). This is how a topic that was
   deleted and created again, and has grown past the old offset since, is told from the old
   one: Kafka's topic ids would say it directly, but the client's metadata requests predate
   them, so, as for the input topic (:mod:`streams.input_identity`), the record at the
   recorded offset is compared.

A record that compaction has removed cannot be compared: that is not a proof, so the files are
discarded (the safe side). Any answer but "reusable" names the partition and the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.config import Config
from engine.kafka_client import client_kwargs
from streams.input_identity import _one
from streams.topics import changelog_topic_name

#: Faust's key for the persisted changelog offset in each partition's RocksDB.
OFFSET_KEY = b"__faust\0offset__"
_DB_NAME = re.compile(r"^(?P<table>.+)-(?P<partition>\d+)\.db$")


def local_offsets(tables: Path) -> dict[tuple[str, int], tuple[int | None, Any]] | str:
    """``{(table, partition): (persisted offset, open read-only db)}`` of the RocksDB files
    under ``tables``, or why they cannot be read. The caller closes the dbs."""
    from rocksdict import AccessType, Options, Rdict

    found: dict[tuple[str, int], tuple[int | None, Any]] = {}
    for path in sorted(tables.iterdir()):
        match = _DB_NAME.match(path.name)
        if not path.is_dir() or match is None:
            continue
        try:
            db = Rdict(str(path), options=Options(raw_mode=True),
                       access_type=AccessType.read_only())
            raw = db.get(OFFSET_KEY)
            offset = None if raw is None else int(raw)
        except Exception as exc:  # noqa: BLE001 (any failure means: cannot be proven)
            _close_all(found)
            return f"the RocksDB files {path} cannot be opened: {exc}"
        found[(match["table"], int(match["partition"]))] = (offset, db)
    return found


async def local_state_problem(config: Config, tables: Path) -> str | None:
    """``None`` when the local table files under ``tables`` are provably not ahead of Kafka
    (see the module docstring); otherwise the reason they must be discarded."""
    opened = local_offsets(tables)
    if isinstance(opened, str):
        return opened
    try:
        return await _compare(config, opened)
    except Exception as exc:  # noqa: BLE001 (no proof: the safe side is a recovery)
        return f"the changelog could not be compared with them: {exc!r}"
    finally:
        _close_all(opened)


async def _compare(config: Config,
                   opened: dict[tuple[str, int], tuple[int | None, Any]]) -> str | None:
    checks = {TopicPartition(changelog_topic_name(config, table), partition): (offset, db)
              for (table, partition), (offset, db) in opened.items() if offset is not None}
    if not checks:
        return None  # nothing was ever stored from a changelog
    consumer = AIOKafkaConsumer(**client_kwargs(config.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        for tp in checks:
            partitions = consumer.partitions_for_topic(tp.topic) or set()
            if tp.partition not in partitions:
                return (f"changelog {tp.topic!r} has no partition {tp.partition}, but the local "
                        f"state holds it up to offset {checks[tp][0]}: the topic was deleted")
        consumer.assign(list(checks))
        ends = await consumer.end_offsets(list(checks))
        for tp, (offset, db) in sorted(checks.items()):
            if offset >= ends[tp]:
                return (f"changelog {tp.topic!r} partition {tp.partition} ends at offset "
                        f"{ends[tp]}, but the local state holds it up to offset {offset}: the "
                        "topic was deleted and created again, or truncated")
            consumer.seek(tp, offset)
            record = await _one(consumer, tp)
            if record is None or record.offset != offset:
                return (f"changelog {tp.topic!r} partition {tp.partition}: the record at "
                        f"offset {offset} (the last the local state holds) is gone "
                        "(compacted), so the local state cannot be compared")
            stored = db.get(record.key) if record.key is not None else None
            if stored != record.value:
                return (f"changelog {tp.topic!r} partition {tp.partition}: the record at "
                        f"offset {offset} is not the one the local state holds there: the "
                        "topic was deleted and created again")
        return None
    finally:
        await consumer.stop()


def _close_all(opened: dict[tuple[str, int], tuple[int | None, Any]]) -> None:
    for _, db in opened.values():
        try:
            db.close()
        except Exception:  # noqa: BLE001 (closing a read-only handle; nothing to lose)
            pass
