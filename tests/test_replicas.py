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

import orjson
from faust.types import TP

from engine.config import Config
from streams.fencing import FencedRecords, fence_key, fence_value
from streams.ledger import Compaction, invalid_item, ledger_key, live_keys
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
        self.now = 0.0  # the replicas' clock: one second passes per end-offset check
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
        self.now += 1.0
        return {tp: self.ends[tp.partition] for tp in tps}

    def stored_items(self, partition: int):
        return iter(self.stored[partition])

    def persisted_offset(self, tp) -> int | None:
        return self.persisted[tp.partition]


def record(partition: int, offset: int, epoch: int = 0) -> tuple[bytes, bytes]:
    """One apply round's ledger record: one invalid marker of input ``partition@offset``."""
    _, item = invalid_item("missing_field", partition, offset)
    return ledger_key(partition, offset, epoch), b"[" + item + b"]"


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
    replicas = Replicas(table, cores, PARTITIONS)
    replicas.clock = lambda: table.now
    return table, replicas


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

        # The owner writes on: the replica answers as of a second ago, then it is behind.
        table.ends[2] = 12
        await replicas.update_ends()
        served, missing = replicas.coverage()
        assert missing == [] and invalid_count(served, 2) == 10, (
            "a replica that has what its changelog held a second ago is current")
        await replicas.update_ends()
        assert replicas.coverage()[1] == [2], "two checks behind a moving end is behind"
        for offset in (10, 11):
            replicas.take(changelog_event(2, offset, *record(2, offset)))
        served, missing = replicas.coverage()
        assert missing == [] and invalid_count(served, 2) == 12

    asyncio.run(run())


def test_a_replica_following_a_live_owner_stays_current_between_checks() -> None:
    """The owner writes a round (or, taking a partition over, its fence) just before a check:
    the end read then includes a record the replica fetches a moment later. The replica has
    everything the changelog held a check (a second) before, so it answers; under the strict
    rule it was *missing* until its next fetch (seen in CI: a worker answered 503 naming a
    partition right after another worker took it over and wrote its fence)."""
    table, replicas = make({1})
    table.ends[1] = 0

    async def run() -> None:
        await replicas.update_ends()
        await replicas.refresh()
        assert replicas.coverage()[1] == []
        for offset in range(20):  # a live owner: a record before every check
            table.ends[1] = offset + 1
            await replicas.update_ends()
            served, missing = replicas.coverage()
            assert missing == [], f"a replica one record behind at check {offset} was missing"
            assert invalid_count(served, 1) == offset
            replicas.take(changelog_event(1, offset, *record(1, offset)))
            await replicas.refresh()
        assert invalid_count(replicas.coverage()[0], 1) == 20

    asyncio.run(run())


def test_checks_back_to_back_do_not_shorten_the_grace() -> None:
    """A timer that fell behind (a busy event loop) runs its checks back to back: the end a
    replica is judged by is still the one read at least GRACE_SECONDS before, not the one of
    the check before last."""
    table, replicas = make({1})
    table.ends[1] = 1

    async def run() -> None:
        await replicas.update_ends()
        replicas.take(changelog_event(1, 0, *record(1, 0)))
        await replicas.refresh()
        table.ends[1] = 2
        await replicas.update_ends()  # one second later: the new owner's fence, say
        for _ in range(3):  # then three checks within 30 ms
            table.now -= 0.99
            await replicas.update_ends()
        assert replicas.coverage()[1] == [], "checks back to back made a replica missing"
        table.now += 1.0
        assert replicas.coverage()[1] == [1], "a replica short a second after is behind"

    asyncio.run(run())


def test_a_new_owners_fence_that_fences_nothing_leaves_the_replica_served() -> None:
    """Every worker that takes a partition over writes a fence before its first round. The
    replicas of that partition on the other workers hold nothing it fences, so they are served
    on, the same shard. Before, every fence made the replica rebuild in the background, and
    the partition was *missing* meanwhile on every other worker (seen in CI: 503 right after a
    takeover, the log saying "rebuilding")."""
    table, replicas = make({1})
    table.ends[1] = 3

    async def run() -> None:
        await replicas.update_ends()
        for offset in range(3):
            replicas.take(changelog_event(1, offset, *record(1, offset, epoch=1)))
        await replicas.refresh()
        shard = dict(replicas.coverage()[0])[1]
        replicas.take(changelog_event(1, 3, fence_key(1, 3, 2), fence_value(3, 2)))
        table.ends[1] = 4
        await replicas.update_ends()
        await replicas.update_ends()
        served, missing = replicas.coverage()
        assert missing == [], "a fence that fences nothing made the replica missing"
        assert dict(served)[1] is shard and invalid_count(served, 1) == 3
        # the new owner's rounds follow; a zombie's round after the fence is read by nobody
        replicas.take(changelog_event(1, 4, *record(1, 3, epoch=1)))
        replicas.take(changelog_event(1, 5, *record(1, 4, epoch=2)))
        assert invalid_count(replicas.coverage()[0], 1) == 4

    asyncio.run(run())


def test_a_fence_behind_a_zombies_round_rebuilds_the_replica_without_it() -> None:
    """A zombie's round reached the replica before the new owner's fence: the fence fences a
    record the replica holds, so the replica is rebuilt without it (missing meanwhile)."""
    table, replicas = make({1})
    table.ends[1] = 3

    async def run() -> None:
        await replicas.update_ends()
        for offset in range(2):
            replicas.take(changelog_event(1, offset, *record(1, offset, epoch=1)))
        replicas.take(changelog_event(1, 2, *record(1, 5, epoch=1)))  # the zombie's
        await replicas.refresh()
        assert invalid_count(replicas.coverage()[0], 1) == 3
        replicas.take(changelog_event(1, 3, fence_key(1, 2, 2), fence_value(2, 2)))
        table.ends[1] = 4
        await replicas.update_ends()
        assert replicas.coverage()[1] == [1], "a replica holding a fenced record was served"
        await replicas.refresh()
        served, missing = replicas.coverage()
        assert missing == [] and invalid_count(served, 1) == 2

    asyncio.run(run())


def test_a_replica_rebuilt_after_its_owners_compaction_is_served_meanwhile() -> None:
    """The owner's retention pass compacts the partition (new ``|r`` records, then tombstones
    for those they replace): the replica is rebuilt from the records now live, and the shard
    it had is served until then, following the records that arrive meanwhile. Before, the
    partition was *missing* on every worker replicating it at each retention pass (hourly),
    for the rebuild's seconds with years of state."""
    table, replicas = make({1})
    table.ends[1] = 3

    async def run() -> None:
        await replicas.update_ends()
        store = dict(record(1, offset, epoch=1) for offset in range(3))
        for offset, (key, value) in enumerate(sorted(store.items())):
            replicas.take(changelog_event(1, offset, key, value))
        await replicas.refresh()
        before = dict(replicas.coverage()[0])[1]
        owners = replicas.cores.new_shard()  # the owner's shard, as its retention pass has it
        for key, value in sorted(store.items()):
            owners.restore(orjson.loads(value))
        compaction = Compaction(owners, 1, 0, 900 * 1024, epoch=1)
        live = live_keys(store)
        for key, value in sorted(store.items()):
            compaction.feed(key, value, key in live)
        result = compaction.finish()
        assert result is not None
        parts, old = result
        assert parts and all(b"|r" in key for key, _ in parts) and set(old) == set(store)
        offset = 3
        for key, value in [*parts, *((key, None) for key in old)]:
            replicas.take(changelog_event(1, offset, key, value))
            offset += 1
        replicas.take(changelog_event(1, offset, *record(1, 3, epoch=1)))  # a round after it
        table.ends[1] = offset + 1
        await replicas.update_ends()
        await replicas.update_ends()
        served, missing = replicas.coverage()
        assert missing == [], "a replica was missing while rebuilt after a compaction"
        assert dict(served)[1] is before and invalid_count(served, 1) == 4
        await replicas.refresh()
        served, missing = replicas.coverage()
        assert missing == [] and dict(served)[1] is not before
        assert invalid_count(served, 1) == 4

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

