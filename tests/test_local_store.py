"""The ledger table's local RocksDB store and the changelog offset it claims to hold.

Faust's recovery (and a standby replica, streams/replicas.py) reads a changelog partition from
the offset after the one the local store says it holds. The apply stage stores each record
Kafka acknowledged (streams/tables.py ``store_acknowledged``); if another worker wrote to the
partition in between — a zombie's partition taken over while it was paused — the store must not
claim those records: a restart, or the replica, would never read them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from faust.types import TP

from engine.config import TopicsConfig, WorkerConfig, config_from_mapping
from streams.worker import build_worker

PARTITION = 1


def _table(tmp_path: Path):
    config = replace(config_from_mapping({"calendar": {"timezone": "UTC"}}),
                     worker=WorkerConfig(app_id="local-store", data_dir=str(tmp_path),
                                         store="rocksdb://"),
                     topics=TopicsConfig(input="in", dead_letter="dlq", partitions=3))
    table = build_worker(config).table
    return table, TP(table.changelog_topic_name, PARTITION)


def test_own_consecutive_writes_advance_the_offset(tmp_path) -> None:
    table, tp = _table(tmp_path)
    for offset in range(3):
        table.store_acknowledged(PARTITION, b"1|%020d" % offset, b"[]", offset)
    assert table.data.persisted_offset(tp) == 2


def test_records_written_by_another_worker_in_between_are_not_claimed(tmp_path) -> None:
    """Offsets 2-4 were written by the worker that held the partition meanwhile: the store
    keeps saying 1, so that recovery reads 2-4 (and this worker's own 5 and 6 again, which
    restoring twice does not change)."""
    table, tp = _table(tmp_path)
    table.store_acknowledged(PARTITION, b"1|%020d" % 0, b"[]", 0)
    table.store_acknowledged(PARTITION, b"1|%020d" % 1, b"[]", 1)
    table.store_acknowledged(PARTITION, b"1|%020d" % 7, b"[]", 5)
    table.store_acknowledged(PARTITION, b"1|%020d" % 8, b"[]", 6)
    assert table.data.persisted_offset(tp) == 1
    assert len(list(table.stored_items(PARTITION))) == 4  # the records themselves are kept


def test_a_first_write_after_records_never_read_is_not_claimed_either(tmp_path) -> None:
    table, tp = _table(tmp_path)
    table.store_acknowledged(PARTITION, b"1|%020d" % 3, b"[]", 3)
    assert table.data.persisted_offset(tp) is None
