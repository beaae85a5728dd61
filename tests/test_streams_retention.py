"""The retention pass: a compacted ledger restores the same shard (SPEC §1.3 retention_days)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone

import orjson

from engine.calendar import Calendar, to_micros
from engine.config import Config, TopicsConfig, WorkerConfig, config_from_mapping
from engine.core import Core
from engine.decode import decode
from engine.event import MICRO, Event, Rejection
from engine.tooling.generator import GeneratorSettings, history_lines
from engine.report import build_report
from streams.ingest import Ingest
from streams.ledger import (
    INVALID, REPLAY, Shard, compact, event_items, invalid_item, ledger_key, live_keys,
)
from streams.metrics import WorkerMetrics
from streams.retention import Retention
from streams.tables import PartitionCores, restore_shard

CONFIG = config_from_mapping({
    "calendar": {"timezone": "America/New_York", "fiscal_year_start_month": 2},
    "money": {"currency": "USD"},
})
START = datetime(2023, 1, 1, tzinfo=timezone.utc)
END = datetime(2026, 3, 1, tzinfo=timezone.utc)
NOW = to_micros(END)
HORIZON = NOW - CONFIG.limits.retention_days * 86_400 * MICRO
PARTITION = 0
ROUND = 400  # input messages per apply round


def _shard() -> Shard:
    return Shard(Core(Calendar(CONFIG.calendar)))


def _history() -> list[bytes]:
    """Input messages in time order, with a few repeated events and invalid messages."""
    settings = GeneratorSettings(seed=11, teams=2, reps_per_team=3,
                                 timezone="America/New_York", currency="USD", scale=0.3)
    lines = list(history_lines(settings, START, END))
    messages = []
    for i, raw in enumerate(lines):
        messages.append(raw)
        if i % 97 == 0:
            messages.append(raw)  # a new message repeating an event_id: a duplicate
        if i % 211 == 0:
            messages.append(b"{not json")
    return messages


def _items(raw: bytes, offset: int) -> list[list]:
    event = decode(raw, currency="USD", max_event_bytes=1 << 20)
    if not isinstance(event, Event):
        return [orjson.loads(invalid_item(event.reason, 1, offset)[1])]
    return [orjson.loads(item) for _, item in event_items(event, 1, offset)]


def _ledger(messages: list[bytes]) -> tuple[Shard, dict[bytes, bytes]]:
    """The live shard and its ledger records, one per round of :data:`ROUND` messages."""
    shard, store = _shard(), {}
    for start in range(0, len(messages), ROUND):
        entries: list[list] = []
        items = [item for offset in range(start, min(start + ROUND, len(messages)))
                 for item in _items(messages[offset], offset)]
        shard.take_bundle(items, entries, Counter(), Counter())
        store[ledger_key(PARTITION, start // ROUND)] = orjson.dumps(entries)
    return shard, store


def _restored(store: dict[bytes, bytes]) -> Shard:
    """The shard rebuilt from ``store``, as of the horizon it was compacted at.

    Kept entities keep their old facts, and replaying them brings back their old day stamps,
    which the next retention pass forgets again; evicting here does the same.
    """
    shard = _shard()
    live = live_keys(store)
    restore_shard(shard, iter([(k, v) for k, v in store.items() if k in live]))
    shard.evict(HORIZON)
    return shard


def _report(shard: Shard) -> dict:
    return build_report([shard.core], NOW, CONFIG, shard.counts())


def _kpis(report: dict) -> dict:
    """A report without the counts of events read and counted, which eviction lowers
    (tests/test_retention.py); the duplicate and invalid totals stay."""
    events = dict(report["events"])
    del events["read"], events["counted"]
    return {**report, "events": events}


def _compact(shard: Shard, store: dict[bytes, bytes], max_bytes: int = 900 * 1024) -> None:
    shard.evict(HORIZON)
    parts, old = compact(shard, list(store.items()), PARTITION, HORIZON, max_bytes)
    store.update(parts)
    for key in old:
        del store[key]


def test_a_compacted_ledger_restores_the_same_shard_and_replays_stay_harmless() -> None:
    messages = _history()
    live, store = _ledger(messages)
    old_keys = set(store)
    before = _report(live)
    counts = live.counts()
    assert counts["duplicate"] > 0 and counts["invalid"] > 0
    old_bytes = sum(map(len, store.values()))

    _compact(live, store, max_bytes=64 * 1024)
    assert not old_keys & set(store), "the replaced records are gone"
    assert len(store) > 1  # written in parts below the size limit
    assert all(len(v) <= 64 * 1024 for v in store.values())
    assert sum(map(len, store.values())) < old_bytes
    restored = _restored(store)
    assert _kpis(_report(restored)) == _kpis(_report(live))
    assert _kpis(_report(restored)) == _kpis(before)
    assert restored.counts() == counts
    assert restored.sources == live.sources

    # a replay of a kept message, and of an invalid one, is recognised
    recent = next(o for o in range(len(messages) - 1, 0, -1)
                  if isinstance(decode(messages[o], currency="USD", max_event_bytes=1 << 20),
                                Event))
    assert restored.take(_items(messages[recent], recent)[0]) == REPLAY
    bad = max(o for o, raw in enumerate(messages) if raw == b"{not json")
    assert restored.take(_items(messages[bad], bad)[0]) == REPLAY
    # a message of a forgotten entity comes back: ingest rejects it too_late
    config = replace(Config(), worker=WorkerConfig(app_id="unit", data_dir="/nonexistent",
                                                   store="memory://"),
                     topics=TopicsConfig(input="in", dead_letter="dlq", partitions=3))
    judge = Ingest(config, WorkerMetrics()).judge
    first = decode(messages[0], currency="USD", max_event_bytes=1 << 20)
    assert first.ts < HORIZON
    rejected = judge(messages[0], NOW)
    assert isinstance(rejected, Rejection) and rejected.reason == "too_late"

    # later rounds after a compaction, and a second compaction, keep the same numbers
    again = dict(store)
    entries: list[list] = []
    restored.take_bundle(_items(messages[recent], len(messages)), entries, Counter(), Counter())
    again[ledger_key(PARTITION, 10**6)] = orjson.dumps(entries)
    restored.evict(HORIZON + 86_400 * MICRO)
    parts, old = compact(restored, list(again.items()), PARTITION, HORIZON + 86_400 * MICRO,
                         64 * 1024)
    assert set(old) == set(again)
    again = dict(parts)
    assert _kpis(_report(_restored(again))) == _kpis(_report(restored))
    assert _restored(again).counts() == {**counts, "duplicate": counts["duplicate"] + 1}


def test_an_unfinished_compaction_is_ignored_and_superseded_records_are_skipped() -> None:
    messages = _history()[:3000]
    live, store = _ledger(messages)
    live.evict(HORIZON)
    before = (_kpis(_report(live)), live.counts())
    parts, old = compact(live, list(store.items()), PARTITION, HORIZON, 4 * 1024)
    half = {**store, **dict(parts[:-1])}  # crashed while writing the parts
    shard = _restored(half)
    assert (_kpis(_report(shard)), shard.counts()) == before
    both = {**store, **dict(parts)}  # crashed before the tombstones
    shard = _restored(both)
    assert (_kpis(_report(shard)), shard.counts()) == before
    later = ledger_key(PARTITION, 10**6)
    both[later] = orjson.dumps([["I|1", INVALID, "malformed_json", 1, 10**7]])
    assert live_keys(both) == set(dict(parts)) | {later}


def test_the_retention_pass_writes_through_the_ledger_writer() -> None:
    messages = _history()[:2000]
    live, store = _ledger(messages)
    cores = PartitionCores(CONFIG)
    cores.install(PARTITION, live)
    cores.ready = True
    written: list[tuple[int, list]] = []

    class Table:
        def stored_items(self, partition):
            return iter(list(store.items()))

    class Writer:
        async def write_partition(self, partition, records):
            written.append((partition, records))
            for key, value in records:
                if value is None:
                    store.pop(key)
                else:
                    store[key] = value

    before = _kpis(_report(live))
    retention = Retention(CONFIG.limits.retention_days, cores, Table(), Writer())
    assert asyncio.run(retention.run(NOW)) == 1
    assert [len(records) for _, records in written][1] > 1
    assert all(value is None for _, value in written[1][1])
    assert _kpis(_report(_restored(store))) == before
    assert _restored(store).counts() == live.counts()


def test_tombstones_delete_from_the_local_store_and_restore_reads_live_records(tmp_path) -> None:
    from streams.worker import build_worker
    config = replace(CONFIG, worker=WorkerConfig(app_id="unit", data_dir=str(tmp_path),
                                                 store="memory://"),
                     topics=TopicsConfig(input="in", dead_letter="dlq", partitions=3))
    worker = build_worker(config)
    table = worker.table
    live, store = _ledger(_history()[:2000])
    for offset, (key, value) in enumerate(store.items()):
        table.store_acknowledged(PARTITION, key, value, offset)
    live.evict(HORIZON)
    parts, old = compact(live, list(table.stored_items(PARTITION)), PARTITION, HORIZON, 8 * 1024)
    for key, value in parts:
        table.store_acknowledged(PARTITION, key, value, 0)
    assert set(dict(table.live_items(PARTITION))) == set(dict(parts))  # old ones superseded
    for key in old:
        table.store_acknowledged(PARTITION, key, None, 0)
    assert set(dict(table.stored_items(PARTITION))) == set(dict(parts))
    rebuilt = table.rebuild_partition_now(PARTITION)
    rebuilt.evict(HORIZON)
    assert rebuilt.counts() == live.counts()
    assert _kpis(_report(rebuilt)) == _kpis(_report(live))
