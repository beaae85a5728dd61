"""The live worker's pieces that need no broker: judging, bundle items, the ledger, rebuild."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import TopicPartition

from engine.config import Config, TopicsConfig, WorkerConfig
from engine.core import Core
from engine.decode import decode
from engine.event import Event, Rejection, event_to_row
from engine.report import build_report
from engine.timestamps import now_micros
from streams import ingest as ingest_module
from streams.apply import size_groups
from streams.ingest import Ingest
from streams.ledger import (
    APPLIED,
    DUPLICATED,
    IGNORED,
    INVALIDATED,
    REPLAY,
    Shard,
    event_items,
    event_row,
    invalid_item,
    ledger_key,
    ledger_partition,
)
from streams.metrics import WorkerMetrics
from streams.tables import PartitionCores, restore_shard
from streams.topics import partition_for_key
from streams.worker import build_worker


def _config(tmp_path, store: str = "memory://") -> Config:
    return replace(Config(), worker=WorkerConfig(app_id="unit", data_dir=str(tmp_path),
                                                 store=store),
                   topics=TopicsConfig(input="in", dead_letter="dlq", partitions=3))


def _event(doc: dict) -> Event:
    result = decode(orjson.dumps(doc), currency="USD", max_event_bytes=1 << 20,
                    stages=frozenset({"proposal"}))
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
        {"event_id": "8", "type": "deal.updated", "occurred_at": t(25), "deal_id": "D1",
         "stage": "proposal", "expected_close_at": t(-100), "amount": 11, "rep_id": "r2"},
    ]
    return [_event(d) for d in docs]


def _items(event: Event, partition: int, offset: int) -> list[list]:
    return [orjson.loads(data) for _, data in event_items(event, partition, offset)]


def test_event_rows_are_the_engines_rows() -> None:
    for event in _sample_events(datetime.now(timezone.utc)):
        assert event_row(event) == event_to_row(event)


def test_a_won_close_becomes_a_deal_item_and_a_customer_item_with_its_source() -> None:
    close = _sample_events(datetime.now(timezone.utc))[3]
    items = _items(close, 2, 41)
    assert items == [["D|D1", "primary", event_to_row(close), 2, 41],
                     ["C|C1", "acquisition", event_to_row(close), 2, 41]]


def test_a_replay_of_the_same_input_message_leaves_no_trace() -> None:
    shard = Shard(Core(Config().calendar))
    lead = _sample_events(datetime.now(timezone.utc))[0]
    [item] = _items(lead, 0, 7)
    assert shard.take(item) == APPLIED
    assert shard.take(item) == REPLAY
    assert shard.take(_items(lead, 0, 3)[0]) == REPLAY  # an older offset: also done before
    assert shard.duplicates == 0


def test_a_new_message_repeating_an_event_id_is_one_duplicate_even_when_replayed() -> None:
    shard = Shard(Core(Config().calendar))
    lead = _sample_events(datetime.now(timezone.utc))[0]
    assert shard.take(_items(lead, 0, 7)[0]) == APPLIED
    again = _items(lead, 0, 9)[0]  # the same event, a later message of the same partition
    assert shard.take(again) == DUPLICATED
    assert shard.take(again) == REPLAY
    elsewhere = _items(lead, 1, 2)[0]  # the same event from another input partition
    assert shard.take(elsewhere) == DUPLICATED
    assert shard.take(elsewhere) == REPLAY
    assert shard.counts() == {"duplicate": 2, "invalid": 0}


def test_a_repeated_won_close_counts_its_duplicate_once_not_per_aspect() -> None:
    shard = Shard(Core(Config().calendar))
    close = _sample_events(datetime.now(timezone.utc))[3]
    assert [shard.take(i) for i in _items(close, 0, 1)] == [APPLIED, APPLIED]
    assert [shard.take(i) for i in _items(close, 0, 5)] == [DUPLICATED, IGNORED]
    assert shard.duplicates == 1


def test_invalid_markers_count_once_per_input_message() -> None:
    shard = Shard(Core(Config().calendar))
    _, data = invalid_item("malformed_json", 4, 10)
    marker = orjson.loads(data)
    assert marker[0] == "I|4"
    assert shard.take(marker) == INVALIDATED
    assert shard.take(marker) == REPLAY
    assert shard.take(orjson.loads(invalid_item("too_large", 4, 11)[1])) == INVALIDATED
    assert shard.invalid == Counter({"malformed_json": 1, "too_large": 1})


def test_sources_beyond_the_packed_range_are_kept_exactly() -> None:
    shard = Shard(Core(Config().calendar))
    assert shard.advance("k", 70_000, 5)
    assert not shard.advance("k", 70_000, 5)
    assert shard.advance("k", 1, 5) and shard.advance("k", 70_000, 6)
    assert not shard.advance("k", 1, 4)


def test_a_shard_restored_from_its_ledger_equals_the_live_one() -> None:
    """The ledger is the whole truth: KPIs, duplicates and invalid counts come back."""
    config = Config()
    live = Shard(Core(config.calendar))
    entries: list[list] = []
    events = _sample_events(datetime.now(timezone.utc))
    offset = 0
    for event in events + events[:3]:  # three new messages repeating event ids
        offset += 1
        live.take_bundle(_items(event, offset % 2, offset), entries, Counter(), Counter())
    live.take_bundle([orjson.loads(invalid_item("not_an_object", 1, 99)[1])], entries,
                     Counter(), Counter())
    replayed = _items(events[0], 1, 1)
    assert live.take_bundle(replayed, entries, Counter(), Counter()) == (1, 0)
    records = [(ledger_key(0, 5), orjson.dumps(entries[:4])),
               (ledger_key(0, 9), orjson.dumps(entries[4:]))]
    restored = Shard(Core(config.calendar))
    assert restore_shard(restored, iter(records)) == len(entries)
    assert restored.counts() == live.counts() == {"duplicate": 3, "invalid": 1}
    assert restored.sources == live.sources
    as_of = now_micros()
    assert build_report([restored.core], as_of, config, restored.counts()) == \
        build_report([live.core], as_of, config, live.counts())


def test_judge_dead_letters_clock_violations_and_never_raises(tmp_path, monkeypatch) -> None:
    ingest = Ingest(_config(tmp_path), WorkerMetrics())
    now = datetime.now(timezone.utc)
    lead = {"event_id": "x", "type": "lead.created", "lead_id": "L"}
    judge = ingest.judge
    now_us = now_micros()
    valid = judge(orjson.dumps({**lead, "occurred_at": now.isoformat()}), now_us)
    assert isinstance(valid, list) and valid[0][0] == "L|L"
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

    monkeypatch.setattr(ingest, "decoder", broken)
    crashed = judge(b"{}", now_us)
    assert isinstance(crashed, Rejection) and "decoder bug" in crashed.detail


def _record(partition: int, offset: int, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(topic="in", partition=partition, offset=offset, key=None,
                           value=value, headers=(), timestamp=-1)


def test_a_batch_keeps_each_input_partitions_order_and_cuts_oversized_bundles(
        tmp_path, monkeypatch) -> None:
    ingest = Ingest(_config(tmp_path), WorkerMetrics())
    now = datetime.now(timezone.utc)
    monkeypatch.setattr(ingest_module, "BUNDLE_MAX_BYTES", 2000)
    batch = {}
    for p in (0, 1):
        batch[TopicPartition("in", p)] = [
            _record(p, offset, orjson.dumps({
                "event_id": f"{p}-{offset}", "type": "activity.logged",
                "occurred_at": (now - timedelta(minutes=offset)).isoformat(),
                "team_id": "t", "rep_id": "r1", "activity_type": "call"}))
            for offset in range(40)]
    batch[TopicPartition("in", 1)].append(_record(1, 40, b"not json"))
    parts = ingest.plan(batch, now_micros())
    assert len(parts) > 1
    assert all(len(b"[" + b",".join(items) + b"]") <= 2000 + 1
               for part in parts for items in part.bundles.values())
    seen: dict[tuple[str, int], int] = {}
    for part in parts:
        for target, items in part.bundles.items():
            for key, _kind, _payload, p, offset in map(orjson.loads, items):
                assert partition_for_key(key.encode(), 3) == target
                assert offset > seen.get((key, p), -1)
                seen[(key, p)] = offset
    assert sum(part.consumed for part in parts) == 81
    assert [len(part.dead_letters) for part in parts][-1] == 1
    assert parts[-1].offsets == {TopicPartition("in", 0): 40, TopicPartition("in", 1): 41}
    assert all(not part.offsets for part in parts[:-1])  # committable only after the last


def test_rounds_are_cut_where_a_partitions_ledger_record_would_grow_too_large() -> None:
    def bundle(partition: int, size: int) -> SimpleNamespace:
        return SimpleNamespace(message=SimpleNamespace(partition=partition, value=b"x" * size))

    bundles = [bundle(0, 400), bundle(1, 900), bundle(0, 500), bundle(0, 200), bundle(1, 50)]
    groups = [[(b.message.partition, len(b.message.value)) for b in group]
              for group in size_groups(bundles, limit=1000)]
    assert groups == [[(0, 400), (1, 900), (0, 500)], [(0, 200), (1, 50)]]


def test_memory_store_records_are_found_by_the_partition_in_their_key(tmp_path) -> None:
    worker = build_worker(_config(tmp_path))
    keys = [ledger_key(p, offset) for p in range(3) for offset in (5, 17)]
    for key in keys:
        worker.table.data.data[key] = b"[]"
    for partition in range(3):
        found = {key for key, _ in worker.table.stored_items(partition)}
        assert found == {k for k in keys if ledger_partition(k) == partition}
        assert set(worker.table.stored_keys(partition)) == found
        assert {key for key, _ in worker.table.live_items(partition)} == found


def test_restore_takes_sources_and_markers_exactly_as_advance_judges_them() -> None:
    """:meth:`Shard.restore` inlines :meth:`Shard.advance`: random markers and source entries
    (repeats, older offsets, several input partitions per key, partitions beyond the packed
    range) must leave the sources and counts that ``advance`` entry by entry leaves."""
    rng = random.Random(5)
    entries = []
    for _ in range(20_000):
        k = rng.randrange(40)
        key = f"K{k}"
        if k < 20:  # one input partition per key (the usual case, kept packed in one int)
            partition = k % 4
        elif k < 30:  # several
            partition = rng.choice((0, 1, 2, 3))
        else:  # beyond the packed range, alone or with others
            partition = rng.choice((70_000, 70_000, 1)) if k < 35 else 70_001
        offset = rng.randrange(300)
        kind = rng.choice(("duplicate", "invalid", "source"))
        payload = {"duplicate": "e1", "invalid": rng.choice(("too_large", "malformed_json")),
                   "source": None}[kind]
        entries.append([key, kind, payload, partition, offset])
    restored = Shard(Core(Config().calendar))
    assert restored.restore(entries) == len(entries)
    expected = Shard(Core(Config().calendar))
    for key, kind, payload, partition, offset in entries:
        new = expected.advance(key, partition, offset)
        if kind == "duplicate":
            expected.duplicates += new
        elif kind == "invalid" and new:
            expected.invalid[payload] += 1
    assert restored.sources == expected.sources
    assert any(type(last) is dict for last in restored.sources.values())
    assert (restored.duplicates, restored.invalid) == (expected.duplicates, expected.invalid)
    assert 0 < restored.duplicates < 7_000 and 0 < sum(restored.invalid.values()) < 7_000


def test_ledger_keys_sort_in_write_order() -> None:
    assert ledger_key(1, 99) < ledger_key(1, 100) < ledger_key(1, 10**12)


def test_partition_for_key_is_stable_and_spreads_keys() -> None:
    counts = Counter(partition_for_key(f"D|deal-{i}".encode(), 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 800
    assert partition_for_key(b"L|lead-1", 4) == 3  # a change would move state: see topics.py


def test_a_workers_shards_share_one_calendar_and_still_equal_one_core() -> None:
    """One calendar (its local-day memo) for every shard: what the shards answer together is
    what one core fed every event answers."""
    config = Config()
    cores = PartitionCores(config)
    shards = [cores.new_shard() for _ in range(3)]
    assert shards[0].core.calendar is shards[1].core.calendar is cores.calendar
    single = Core(config.calendar)
    now = datetime.now(timezone.utc)
    for day in range(0, 400, 7):
        for offset, event in enumerate(_sample_events(now - timedelta(days=day))):
            event.event_id = f"{day}-{event.event_id}"
            for item in _items(event, 0, day * 10 + offset):
                shards[partition_for_key(item[0].encode(), 3)].take(item)
            single.apply(_event_copy(event))
    as_of = now_micros()
    assert build_report([s.core for s in shards], as_of, config, {"duplicate": 0}) == \
        build_report([single], as_of, config, {"duplicate": 0})


def _event_copy(event: Event) -> Event:
    return Event(*event_to_row(event))


def test_a_rebalance_drops_shards_of_lost_partitions_and_clears_readiness() -> None:
    cores = PartitionCores(Config())
    for partition in (0, 1, 2):
        cores.install(partition, cores.new_shard())
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
    (tables / "ledger-0.db").mkdir()
    if clean:
        assert worker.mark_clean_stop()
    assert worker.prepare_local_state() is (not clean)
    assert tables.exists() is clean
    assert not (tables.parent / "clean-stop").exists()  # a marker is good for one start


def test_a_stop_with_unacknowledged_table_writes_is_not_clean(tmp_path) -> None:
    worker = build_worker(_config(tmp_path, store="rocksdb://"))
    worker.table.unconfirmed_batches = 1
    assert not worker.mark_clean_stop()


def test_the_ingest_process_counters_reach_the_worker_metrics() -> None:
    import multiprocessing

    from streams.ingest_process import IngestProcess, PipeMetrics

    metrics = WorkerMetrics()
    receiver, sender = multiprocessing.Pipe(duplex=False)
    relay = IngestProcess(None, Config(), metrics)
    relay._conn = receiver
    child = PipeMetrics(sender)
    child.count_ingest(5, Counter({"malformed_json": 2}))
    child.count_dead_letters(2)
    child.count_ingest(3, Counter())
    child.count_dead_letters(0)

    async def receive() -> None:
        relay._receive()

    asyncio.run(receive())
    assert metrics.totals == Counter({"read": 8, "invalid": 2})
    assert metrics.dead_letter_sent._value.get() == 2


def test_an_ingest_process_that_stopped_on_a_kafka_failure_stops_the_worker_alike(
        monkeypatch) -> None:
    from streams import ingest_process

    class Exited(Exception):
        pass

    def exit_now(exc: BaseException):
        raise Exited(exc)

    monkeypatch.setattr(ingest_process, "exit_on_kafka_failure", exit_now)
    relay = ingest_process.IngestProcess(None, Config(), WorkerMetrics())
    relay.process = SimpleNamespace(exitcode=ingest_process.EXIT_KAFKA_FAILURE)
    with pytest.raises(Exited):
        asyncio.run(relay._watch())
