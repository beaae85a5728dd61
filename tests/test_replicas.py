"""Which partitions a worker may answer for from its standby replicas (streams.replicas).

A replica is a copy of another worker's partition, read from that partition's changelog. It
counts as served only once it has applied the changelog up to the end offset the partition
had at the last check (refreshed every second); before, it is *missing*, so an answer never
passes a replica that is behind for the whole company's numbers. Before this rule, a replica
rebuilt from whatever the local store held was served at once: a worker that had just joined
answered 3,768 of 11,396 messages with ``missing: []``.

The Faust side is stood in for (the assignor's standbys, the local store, the consumer's end
offsets); the shards, the cores and the rule are the real ones.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from engine.config import Config
from streams.fencing import FencedRecords
from streams.ledger import invalid_item, ledger_key
from streams.replicas import DROPPED_CHECKS, Replicas
from streams.tables import PartitionCores

TOPIC = "app-ledger-changelog"
PARTITIONS = 3


class StandbyTable:
    """What :class:`Replicas` reads of the ledger table and Faust: standby partitions, the
    local store (records and persisted offset per partition) and the changelog's end offsets."""

    def __init__(self, standbys: set[int]) -> None:
        self.changelog_topic_name = TOPIC
        self.standby_partitions = standbys
        self.stored: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
        self.persisted: dict[int, int | None] = {p: None for p in range(PARTITIONS)}
        self.ends: dict[int, int] = {p: 0 for p in range(PARTITIONS)}
        self.end_requests = 0
        self.on_changelog_record = None
        self.fenced = FencedRecords()
        assignor = SimpleNamespace(assigned_standbys=lambda: {
            TP(TOPIC, p) for p in self.standby_partitions})
        #: the consumer's fetch position per partition (None: unknown), and the seeks made
        self.positions: dict[int, int | None] = {p: None for p in range(PARTITIONS)}
        self.seeks: list[tuple[int, int]] = []
        self.recovery = SimpleNamespace(standby_offsets={})
        consumer = SimpleNamespace(highwaters=self._highwaters, position=self._position,
                                   seek=self._seek)
        self.app = SimpleNamespace(assignor=assignor, consumer=consumer,
                                   tables=SimpleNamespace(recovery=self.recovery))

    async def _position(self, tp) -> int | None:
        return self.positions[tp.partition]

    async def _seek(self, tp, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    async def _highwaters(self, *tps) -> dict:
        self.end_requests += 1
        return {tp: self.ends[tp.partition] for tp in tps}

    def stored_items(self, partition: int):
        return iter(self.stored[partition])

    def persisted_offset(self, tp) -> int | None:
        return self.persisted[tp.partition]


def record(partition: int, offset: int) -> tuple[bytes, bytes]:
    """One apply round's ledger record: one invalid marker of input ``partition@offset``."""
    _, item = invalid_item("missing_field", partition, offset)
    return ledger_key(partition, offset), b"[" + item + b"]"


def changelog_event(partition: int, offset: int, key: bytes, value: bytes | None):
    return SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset,
                                                   key=key, value=value))


def invalid_count(served: list, partition: int) -> int:
    return dict(served)[partition].counts()["invalid"]


def make(standbys: set[int]) -> tuple[StandbyTable, Replicas]:
    table = StandbyTable(standbys)
    cores = PartitionCores(Config())
    cores.ready = True
    for p in range(PARTITIONS):
        if p not in standbys:
            cores.install(p, cores.new_shard())
    return table, Replicas(table, cores, PARTITIONS)


def test_a_replica_behind_its_changelog_is_missing_until_it_has_caught_up() -> None:
    table, replicas = make({2})
    # The local store holds 4 records (changelog offsets 0-3); the changelog has 10.
    table.stored[2] = [record(2, offset) for offset in range(4)]
    table.persisted[2] = 3
    table.ends[2] = 10

    async def run() -> None:
        await replicas.update_ends()
        await replicas.refresh()
        served, missing = replicas.coverage()
        assert missing == [2], "a replica 6 records behind was served as current"
        assert [p for p, _ in served] == [0, 1]
        for offset in range(4, 9):
            replicas.take(changelog_event(2, offset, *record(2, offset)))
        await replicas.refresh()
        assert replicas.coverage()[1] == [2], "one record behind is still behind"
        replicas.take(changelog_event(2, 9, *record(2, 9)))
        served, missing = replicas.coverage()
        assert missing == [] and invalid_count(served, 2) == 10

        # The owner writes on; once the end offsets are read again, the replica is behind.
        table.ends[2] = 12
        await replicas.update_ends()
        assert replicas.coverage()[1] == [2]
        for offset in (10, 11):
            replicas.take(changelog_event(2, offset, *record(2, offset)))
        served, missing = replicas.coverage()
        assert missing == [] and invalid_count(served, 2) == 12

    asyncio.run(run())


def test_a_replica_is_missing_until_the_end_of_its_changelog_is_known() -> None:
    table, replicas = make({1, 2})

    async def run() -> None:
        await replicas.refresh()  # empty stores; no end offset read yet
        assert replicas.coverage()[1] == [1, 2]
        await replicas.update_ends()  # both changelog partitions are empty: current
        served, missing = replicas.coverage()
        assert missing == [] and [p for p, _ in served] == [0, 1, 2]

    asyncio.run(run())


def test_a_replica_seeded_from_a_complete_local_store_is_served_without_new_records() -> None:
    """A worker that owned a partition before holds it up to the end: nothing to wait for."""
    table, replicas = make({0})
    table.stored[0] = [record(0, offset) for offset in range(5)]
    table.persisted[0] = 4
    table.ends[0] = 5

    async def run() -> None:
        await replicas.update_ends()
        await replicas.refresh()
        served, missing = replicas.coverage()
        assert missing == [] and invalid_count(served, 0) == 5

    asyncio.run(run())


def test_end_offsets_are_kept_when_they_cannot_be_read() -> None:
    """A broker that does not answer leaves the last known end offsets (documented: the owner
    cannot write past them either while the broker is away)."""
    table, replicas = make({1})
    table.ends[1] = 1

    async def failing(*tps) -> dict:
        raise ConnectionError("broker away")

    async def run() -> None:
        await replicas.update_ends()
        replicas.take(changelog_event(1, 0, *record(1, 0)))
        await replicas.refresh()
        assert replicas.coverage()[1] == []
        table.app.consumer.highwaters = failing
        await replicas.update_ends()
        assert replicas.coverage()[1] == []

    asyncio.run(run())


def test_records_dropped_with_a_standby_leave_no_offset_behind() -> None:
    table, replicas = make({1})
    table.ends[1] = 3

    async def run() -> None:
        await replicas.update_ends()
        for offset in range(3):
            replicas.take(changelog_event(1, offset, *record(1, offset)))
        await replicas.refresh()
        assert replicas.coverage()[1] == []
        table.standby_partitions = set()
        await replicas.refresh()
        assert 1 not in replicas.applied
        # Standby again later, with a store that lags (another worker wrote meanwhile).
        table.standby_partitions = {1}
        table.stored[1] = [record(1, offset) for offset in range(3)]
        table.persisted[1] = 2
        table.ends[1] = 6
        await replicas.update_ends()
        await replicas.refresh()
        assert replicas.coverage()[1] == [1]

    asyncio.run(run())


def test_records_fetched_but_never_taken_are_read_again() -> None:
    """Faust dropped standby records it had fetched (the consumer's position is at the end,
    the replica behind it): the partition is read again from the first record the replica
    lacks, and the recovery's last-applied offset lowered so that it takes them again.
    Before: no seek, the replica missing until the owner wrote again (for good at the end of
    a stream)."""
    table, replicas = make({1})

    async def run() -> None:
        first = record(1, 0)
        replicas.take(changelog_event(1, 0, *first))
        await replicas.refresh()
        table.ends[1] = 3  # records 1 and 2 were fetched and dropped
        table.positions[1] = 3
        tp = TP(TOPIC, 1)
        table.recovery.standby_offsets[tp] = 2
        for _ in range(DROPPED_CHECKS - 1):
            await replicas.update_ends()
        assert table.seeks == []  # records may still be on their way
        await replicas.update_ends()
        assert table.seeks == [(1, 1)]
        assert table.recovery.standby_offsets[tp] == 0
        assert replicas.coverage()[1] == [1]
        for offset in (1, 2):
            replicas.take(changelog_event(1, offset, *record(1, offset)))
        await replicas.update_ends()
        assert table.seeks == [(1, 1)]
        assert replicas.coverage()[1] == []
        assert invalid_count(replicas.coverage()[0], 1) == 3

    asyncio.run(run())

