"""The live worker's pieces that need no broker: judging, keyed records, stored rows, rebuild."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from engine.config import Config, TopicsConfig, WorkerConfig
from engine.core import Core
from engine.decode import decode
from engine.event import Event, Rejection, event_to_row
from engine.report import build_report
from engine.timestamps import now_micros
from streams import agents
from streams.agents import keyed_records
from streams.tables import PartitionCores, append_rows, rebuild_core
from streams.topics import partition_for_key
from streams.worker import build_worker


def _config(tmp_path, store: str = "memory://") -> Config:
    return replace(Config(), worker=WorkerConfig(app_id="unit", data_dir=str(tmp_path),
                                                 store=store),
                   topics=TopicsConfig(input="in", dead_letter="dlq", partitions=3))


def _event(doc: dict) -> Event:
    result = decode(orjson.dumps(doc), currency="USD", max_event_bytes=1 << 20)
    assert isinstance(result, Event), result
    return result


def _sample_events(now: datetime) -> list[Event]:
    t = lambda hours: (now - timedelta(hours=hours)).isoformat()  # noqa: E731
    docs = [
        {"event_id": "1", "type": "lead.created", "occurred_at": t(50), "lead_id": "L1",
         "team_id": "a", "rep_id": "r1"},
        {"event_id": "2", "type": "lead.qualified", "occurred_at": t(40), "lead_id": "L1",
         "team_id": "a", "rep_id": "r1"},
        {"event_id": "3", "type": "deal.created", "occurred_at": t(30), "deal_id": "D1",
         "team_id": "a", "rep_id": "r1", "amount": 10},
        {"event_id": "4", "type": "deal.closed", "occurred_at": t(20), "deal_id": "D1",
         "team_id": "a", "rep_id": "r1", "outcome": "won", "amount": 12.5,
         "customer_id": "C1"},
        {"event_id": "5", "type": "subscription.started", "occurred_at": t(19),
         "subscription_id": "S1", "customer_id": "C1", "mrr": 3},
        {"event_id": "6", "type": "activity.logged", "occurred_at": t(10), "team_id": "b",
         "rep_id": "r2", "activity_type": "call"},
        {"event_id": "7", "type": "spend.recorded", "occurred_at": t(5), "amount": 7,
         "category": "sales"},
    ]
    return [_event(d) for d in docs]


def test_append_rows_concatenates_encoded_pairs_without_decoding() -> None:
    a, b, c = (orjson.dumps(["primary", [i]]) for i in range(3))
    first = append_rows(None, [a])
    assert orjson.loads(first) == [["primary", [0]]]
    assert orjson.loads(append_rows(first, [b, c])) == [["primary", [0]], ["primary", [1]],
                                                        ["primary", [2]]]
    assert orjson.loads(append_rows(b"[]", [c])) == [["primary", [2]]]


def test_keyed_records_give_a_won_close_a_deal_and_a_customer_record() -> None:
    close = _sample_events(datetime.now(timezone.utc))[3]
    records = keyed_records(close)
    assert [key for key, _ in records] == [b"D|D1", b"C|C1"]
    assert [orjson.loads(value) for _, value in records] == [
        ["primary", event_to_row(close)], ["acquisition", event_to_row(close)]]


def test_core_rebuilt_from_stored_rows_reports_like_the_core_fed_directly() -> None:
    """Stored rows are the whole truth: re-applying them rebuilds the same KPI state."""
    config = Config()
    direct = Core(config.calendar)
    stored: dict[bytes, list[bytes]] = defaultdict(list)
    for event in _sample_events(datetime.now(timezone.utc)):
        for key, value in keyed_records(event):
            aspect, row = orjson.loads(value)
            if direct.apply(event, aspect):
                stored[key].append(value)
        for key, value in keyed_records(event):  # a redelivery changes nothing
            assert not direct.apply(event, orjson.loads(value)[0])
    values = {key: append_rows(None, rows[:1]) for key, rows in stored.items()}
    for key, rows in stored.items():
        if rows[1:]:
            values[key] = append_rows(values[key], rows[1:])
    rebuilt = Core(config.calendar)
    assert rebuild_core(rebuilt, iter(values.items())) == sum(map(len, stored.values()))
    as_of = now_micros()
    assert build_report([rebuilt], as_of, config) == build_report([direct], as_of, config)


def test_judge_dead_letters_clock_violations_and_never_raises(tmp_path, monkeypatch) -> None:
    worker = build_worker(_config(tmp_path))
    now = datetime.now(timezone.utc)
    lead = {"event_id": "x", "type": "lead.created", "lead_id": "L"}
    judge = worker.ingest.judge
    now_us = now_micros()
    valid = judge(orjson.dumps({**lead, "occurred_at": now.isoformat()}), now_us)
    assert isinstance(valid, list) and valid[0][0] == b"L|L"
    future = judge(orjson.dumps({**lead, "occurred_at": (now + timedelta(hours=1)).isoformat()}),
                   now_us)
    assert isinstance(future, Rejection) and future.reason == "future_timestamp"
    late = judge(orjson.dumps({**lead, "occurred_at": (now - timedelta(days=801)).isoformat()}),
                 now_us)
    assert isinstance(late, Rejection) and late.reason == "too_late"
    assert judge(None, now_us).reason == "malformed_json"
    assert judge(b"\xff\xfe", now_us).reason == "malformed_json"

    def broken(*args, **kwargs):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(agents, "decode", broken)
    crashed = judge(b"{}", now_us)
    assert isinstance(crashed, Rejection) and "decoder bug" in crashed.detail


def test_memory_store_rows_are_found_by_the_partition_kafka_chose(tmp_path) -> None:
    worker = build_worker(_config(tmp_path))
    keys = [f"L|lead-{i}".encode() for i in range(50)]
    for key in keys:
        worker.table.data.data[key] = b"[]"
    for partition in range(3):
        found = {key for key, _ in worker.table.stored_items(partition)}
        assert found == {k for k in keys if partition_for_key(k, 3) == partition}


def test_partition_for_key_matches_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for i in range(100):
        key = f"D|deal-{i}".encode()
        assert partition_for_key(key, 7) == DefaultPartitioner()(key, list(range(7)), [])


def test_a_rebalance_drops_cores_of_lost_partitions_and_clears_readiness() -> None:
    cores = PartitionCores(Config())
    for partition in (0, 1, 2):
        cores.install(partition, cores.new_core())
    cores.ready = True
    epoch = cores.epoch
    cores.begin_rebalance({0, 2})
    assert cores.partitions() == [0, 2]
    assert not cores.ready
    assert cores.epoch == epoch + 1


@pytest.mark.parametrize("clean", [True, False])
def test_local_tables_are_kept_after_a_clean_stop_and_discarded_otherwise(tmp_path,
                                                                          clean) -> None:
    worker = build_worker(_config(tmp_path, store="rocksdb://"))
    tables = worker.state_dir
    tables.mkdir(parents=True)
    (tables / "entities-0.db").mkdir()
    if clean:
        assert worker.mark_clean_stop()
    assert worker.prepare_local_state() is (not clean)
    assert tables.exists() is clean
    assert not (tables.parent / "clean-stop").exists()  # a marker is good for one start


def test_a_stop_with_unacknowledged_table_writes_is_not_clean(tmp_path) -> None:
    worker = build_worker(_config(tmp_path, store="rocksdb://"))
    worker.table.unconfirmed_batches = 1
    assert not worker.mark_clean_stop()
