"""The apply stage never applies a bundle of a partition it does not own, and never exits for one.

Why (docs/reliability.md, "A bundle of a partition that is not active here"): right after a
start, the apply agent was handed bundles of a partition whose shard was not built and which
the assignor did not list as active, and the stage stopped the process ("bundle of partition
N, which is not active here"). Such bundles belong to another worker: applying them here would
write a ledger record into a changelog partition this worker does not own, and stopping the
process is worse than the fault. They are skipped, without moving this worker's resume point
or marking a gap (a seek on a partition not assigned here would fail), so the owner reads them.

The worker is the real one (``build_worker``, in-memory store), its assignment is Faust's own
``ClientAssignment`` as the assignor holds it after a rebalance; no broker is needed since no
ledger record is written for the skipped bundles. The consumer is not started: its assignment
is given and its seeks are recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import orjson
from faust.assignor.client_assignment import ClientAssignment
from faust.types import TP
from faust.types.tuples import Message

from engine.config import Config, TopicsConfig, WorkerConfig
from engine.decode import decode
from engine.event import Event
from streams.ledger import encode_bundle, event_items, invalid_item, ledger_key
from streams.topics import bundles_topic_name
from streams.worker import build_worker


def _config(tmp_path) -> Config:
    return replace(Config(), worker=WorkerConfig(app_id="own", data_dir=str(tmp_path),
                                                 store="memory://"),
                   topics=TopicsConfig(input="in", dead_letter="dlq", partitions=3))


def _bundle(topic: str, partition: int, offset: int, source_offset: int) -> SimpleNamespace:
    """A bundle as the agent gets it: a lead event and an invalid marker from the input."""
    occurred = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    event = decode(orjson.dumps({"event_id": f"e{partition}-{offset}", "type": "lead.created",
                                 "occurred_at": occurred, "lead_id": f"L{partition}-{offset}",
                                 "team_id": "t", "rep_id": "r"}),
                   currency="USD", max_event_bytes=1 << 20, stages=frozenset())
    assert isinstance(event, Event), event
    items = [data for _, data in event_items(event, 0, source_offset)]
    items.append(invalid_item("malformed_json", 0, source_offset + 1)[1])
    value = encode_bundle(items)
    return SimpleNamespace(message=Message(topic, partition, offset, 0.0, 0, {}, None, value,
                                           None))


def _worker(tmp_path, monkeypatch, held: set[int]):
    """A real worker after a rebalance: partitions 0 and 2 active here (0 rebuilt, 2 not yet),
    1 not; its consumer holds the bundles partitions ``held`` (the consumer is not started:
    its assignment and seeks are recorded instead)."""
    fatal: list[BaseException] = []
    worker = build_worker(_config(tmp_path), on_fatal=fatal.append, ingest_in_process=True)
    bundles = bundles_topic_name(worker.config)
    changelog = worker.table.changelog_topic_name
    worker.app.assignor._assignment = ClientAssignment(
        actives={changelog: [0, 2], bundles: [0, 2]}, standbys={})
    worker.cores.install(0, worker.cores.new_shard())
    seeks: list[tuple[int, int]] = []

    async def seek(tp, offset) -> None:
        seeks.append((tp.partition, offset))

    monkeypatch.setattr(worker.app.consumer, "assignment",
                        lambda: {TP(bundles, p) for p in held})
    monkeypatch.setattr(worker.app.consumer, "seek", seek)
    return worker, bundles, fatal, seeks


def _round(bundles: str) -> list[SimpleNamespace]:
    """Partition 1's first bundles (a fresh stream, offset 0: before, the process exited)
    between bundles of partitions 0 and 2."""
    return [_bundle(bundles, 0, 0, 10), _bundle(bundles, 1, 0, 20),
            _bundle(bundles, 0, 1, 30), _bundle(bundles, 1, 1, 40),
            _bundle(bundles, 2, 0, 50)]


def _assert_only_owned_applied(worker, round_, records, fatal, counted_before) -> None:
    cores = worker.cores
    assert fatal == []
    assert sorted(records) == [0, 2]  # no ledger record for partition 1
    epochs = worker.table.epochs  # partition 2 was rebuilt here: its writer's epoch (fencing)
    assert records[0][0] == ledger_key(0, 1, epochs.get(0, 0))
    assert records[2][0] == ledger_key(2, 0, epochs.get(2, 0))
    assert cores.partitions() == [0, 2]  # 2 rebuilt (owned), 1 never built
    assert worker.apply.reached == {0: 2, 2: 1}
    assert worker.table.positions.get(1) == 0
    assert worker.apply.skipped_foreign == 2
    counted = worker.metrics.totals["counted"] - counted_before.get("counted", 0)
    assert counted == 3  # the events of partitions 0 and 2 only
    assert sum(shard.counts()["invalid"] for shard in (cores.get(0), cores.get(2))) == 3
    # Faust does not count the skipped bundles as processed: its commit stays behind them.
    skipped = [b.message for b in round_ if b.message.partition == 1]
    assert all(m.acked for m in skipped)
    assert not any(m.acked for m in (b.message for b in round_) if m.partition != 1)
    assert all(m.ack(worker.app.consumer) is False for m in skipped)


def test_bundles_of_a_partition_another_worker_holds_are_skipped_not_applied_nor_fatal(
        tmp_path, monkeypatch) -> None:
    worker, bundles, fatal, seeks = _worker(tmp_path, monkeypatch, held={0, 2})
    counted_before = dict(worker.metrics.totals)
    round_ = _round(bundles)
    records = worker.apply.apply(round_)
    _assert_only_owned_applied(worker, round_, records, fatal, counted_before)
    assert worker.apply.gaps == {}  # not held here: its owner reads them, no seek

    # A round of such bundles only, further on in partition 1 (before: taken for a gap in
    # the stream, and the seek back to read it again failed, the partition not being
    # assigned here): process() writes nothing (the writer is not even started), seeks
    # nothing, and the stage goes on.
    asyncio.run(worker.apply.process([_bundle(bundles, 1, 9, 60)]))
    assert fatal == [] and seeks == [] and worker.apply.skipped_foreign == 3
    assert worker.cores.partitions() == [0, 2]


def test_bundles_of_a_partition_held_but_not_active_yet_are_read_again_not_applied(
        tmp_path, monkeypatch) -> None:
    """The consumer holds bundles partition 1, the assignor does not list changelog partition 1
    as active here (yet): not applied, and read again from the resume point."""
    worker, bundles, fatal, seeks = _worker(tmp_path, monkeypatch, held={0, 1, 2})
    counted_before = dict(worker.metrics.totals)
    round_ = _round(bundles)
    records = worker.apply.apply(round_)
    _assert_only_owned_applied(worker, round_, records, fatal, counted_before)
    assert worker.apply.gaps == {1: 0}

    asyncio.run(worker.apply.process([_bundle(bundles, 1, 0, 20)]))
    assert fatal == [] and seeks == [(1, 0)]  # read again from partition 1's resume point
