"""What each partition applied, and from where: bundle items, ledger entries and shards.

An *item* travels from the ingest stage to the apply stage inside a bundle (a JSON list of
items, one Kafka message per target partition and input batch); a *ledger entry* is what the
apply stage keeps of it. Both are JSON lists of five::

    [route_key, kind, payload, source_partition, source_offset]

    kind         payload     what it is
    primary      event row   the event's effect on its own entity (engine.routing); counted here
    acquisition  event row   a won close's effect on its customer's acquisition
    invalid      reason code an input message that was dead-lettered (SPEC §1.3)
    duplicate    event_id    ledger only: a *new* message repeating an applied event_id

``source_partition`` and ``source_offset`` name the input message the item came from. They are
what makes the counts exact across crashes. After a crash or a rebalance, work is redone: the
ingest stage re-forwards input messages whose offsets it had not committed, and Faust
redelivers bundles the apply agent had not committed. Those *replays* bring back items that were
already applied; they must leave no trace. A genuinely new message that repeats an
``event_id`` is different: it is a duplicate and counts once (SPEC §1.3, §6.14). Per route key
and input partition, items arrive in offset order (the ingest stage forwards a partition in
order, one bundle per target partition per batch, and sends a batch only once Kafka has
acknowledged the one before, so there are no gaps), so an item whose offset is not above the
highest one already taken for its route key and input partition is a replay.

The *ledger* is the durable state: per apply round and partition, one record holding the
round's entries (items applied, duplicate markers, invalid markers), keyed by
:func:`ledger_key`. Entries carry their sources, so one record is at once the effect, the
evidence for recognising replays, and the durable ``duplicate`` and ``invalid`` counts, and
there is no moment in which one exists without the others. A :class:`Shard` is a pure function
of its partition's ledger records (:meth:`Shard.restore`).

Why a ledger of rounds and not one record per entity (the first worker's layout): a record per
route key has to be read, extended and rewritten whenever the key gets an item — a store read,
a store write and a changelog message per modified key — and it rewrites values that only grow
(a busy rep's activity record for a day gains every activity: quadratic bytes, and past the
broker's 1 MiB message limit in the end). A ledger record is written once and never again. What
replay detection needs, the highest source offset per route key and input partition, is kept in
memory (``Shard.sources``, ~130 bytes per route key) and rebuilt with the rest.

Nothing here does I/O; :mod:`streams.apply` and :mod:`streams.ingest` move the bytes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

import orjson

from engine.core import Core
from engine.event import Event
from engine.routing import ASPECT_PRIMARY, routes

log = logging.getLogger(__name__)

INVALID = "invalid"
DUPLICATE = "duplicate"

# Outcomes of Shard.take
REPLAY, APPLIED, DUPLICATED, INVALIDATED, IGNORED = range(5)

#: ``sources`` keeps (offset << bits | partition) in one int while a route key has items from
#: one input partition only, the usual case (producers key by entity): a third of the memory of
#: a per-key dict.
_PARTITION_BITS = 16
_PARTITION_MASK = (1 << _PARTITION_BITS) - 1

_dumps = orjson.dumps


def invalid_key(source_partition: int) -> str:
    """The route key that carries the invalid markers of one input partition."""
    return f"I|{source_partition}"


def event_row(e: Event) -> list:
    """:func:`engine.event.event_to_row`, spelt out: twice as fast, and it runs per event."""
    return [e.event_id, e.type, e.ts, e.team_id, e.rep_id, e.lead_id, e.deal_id, e.customer_id,
            e.subscription_id, e.activity_type, e.outcome, e.category, e.amount, e.mrr,
            e.opened_at]


def event_items(event: Event, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """``(route key, encoded item)`` for each aspect of a valid event from ``partition@offset``."""
    row = event_row(event)
    return [(key, _dumps([key, aspect, row, partition, offset])) for key, aspect in routes(event)]


def invalid_item(reason: str, partition: int, offset: int) -> tuple[str, bytes]:
    """``(route key, encoded item)`` of the marker of an invalid message."""
    key = invalid_key(partition)
    return key, _dumps([key, INVALID, reason, partition, offset])


def encode_bundle(items: list[bytes]) -> bytes:
    """A bundle (or ledger record) from encoded items, without re-encoding them."""
    return b"[" + b",".join(items) + b"]"


def ledger_key(partition: int, last_bundle_offset: int) -> bytes:
    """The key of a ledger record: unique, and in write order within the partition.

    Only a round that takes something new writes a record, and everything up to its last
    bundle was taken by the rounds before it, so a later record always has a higher offset.
    """
    return b"%d|%020d" % (partition, last_bundle_offset)


def ledger_partition(key: bytes) -> int:
    """The partition a ledger key belongs to (for stores that do not keep partitions apart)."""
    return int(key.split(b"|", 1)[0])


class Shard:
    """One partition's KPI core, the highest source offset per route key, and durable counts."""

    __slots__ = ("core", "sources", "duplicates", "invalid")

    def __init__(self, core: Core) -> None:
        self.core = core
        #: route key -> packed (offset, input partition), or {input partition: offset}
        self.sources: dict[str, int | dict[int, int]] = {}
        self.duplicates = 0
        self.invalid: Counter[str] = Counter()

    def counts(self) -> dict[str, int]:
        return {"duplicate": self.duplicates, "invalid": sum(self.invalid.values())}

    def advance(self, key: str, partition: int, offset: int) -> bool:
        """Record ``offset`` as taken for ``key`` and ``partition``; False if it is not new."""
        sources = self.sources
        last = sources.get(key)
        if last is None:
            sources[key] = ((offset << _PARTITION_BITS) | partition
                            if partition <= _PARTITION_MASK else {partition: offset})
            return True
        if type(last) is int:
            if last & _PARTITION_MASK == partition:
                if offset <= last >> _PARTITION_BITS:
                    return False
                sources[key] = (offset << _PARTITION_BITS) | partition
                return True
            last = sources[key] = {last & _PARTITION_MASK: last >> _PARTITION_BITS}
        previous = last.get(partition)
        if previous is not None and offset <= previous:
            return False
        last[partition] = offset
        return True

    def take(self, item: list) -> int:
        """Judge one bundle item and apply it; the outcome (``REPLAY``, ``APPLIED``, …)."""
        key, kind, payload, partition, offset = item
        if not self.advance(key, partition, offset):
            return REPLAY
        if kind == INVALID:
            self.invalid[payload] += 1
            return INVALIDATED
        if self.core.apply(Event(*payload), kind):
            return APPLIED
        if kind == ASPECT_PRIMARY:
            self.duplicates += 1
            return DUPLICATED
        return IGNORED  # e.g. a repeated won close's acquisition: only its primary counts

    def take_bundle(self, items: Iterable[list], entries: list[list], counted: Counter[str],
                    duplicate: Counter[str]) -> tuple[int, int]:
        """:meth:`take` every item, appending ledger entries and tallying by event type.

        Returns ``(replays skipped, items that could not be applied)``; the latter means a bug
        or a foreign writer and is logged. The loop is :meth:`take` inlined: it runs for every
        item of every bundle.
        """
        advance = self.advance
        sources = self.sources
        apply = self.core.apply
        invalid = self.invalid
        replays = errors = 0
        for item in items:
            try:
                key, kind, payload, partition, offset = item
                last = sources.get(key)  # advance(), its two common cases inlined
                if last is None and partition <= _PARTITION_MASK:
                    sources[key] = (offset << _PARTITION_BITS) | partition
                elif type(last) is int and last & _PARTITION_MASK == partition:
                    if offset <= last >> _PARTITION_BITS:
                        replays += 1
                        continue
                    sources[key] = (offset << _PARTITION_BITS) | partition
                elif not advance(key, partition, offset):
                    replays += 1
                    continue
                if kind == INVALID:
                    invalid[payload] += 1
                    entries.append(item)
                elif apply(Event(*payload), kind):
                    entries.append(item)
                    if kind == ASPECT_PRIMARY:
                        counted[payload[1]] += 1
                elif kind == ASPECT_PRIMARY:
                    self.duplicates += 1
                    entries.append([key, DUPLICATE, payload[0], partition, offset])
                    duplicate[payload[1]] += 1
            except Exception:
                errors += 1
                log.exception("cannot apply bundle item %.300r", item)
        return replays, errors

    def restore(self, entries: Iterable[list]) -> int:
        """Re-apply ledger entries (in any order); return how many there were."""
        advance = self.advance
        apply = self.core.apply
        count = 0
        for key, kind, payload, partition, offset in entries:
            advance(key, partition, offset)
            if kind == DUPLICATE:
                self.duplicates += 1
            elif kind == INVALID:
                self.invalid[payload] += 1
            else:
                apply(Event(*payload), kind)
            count += 1
        return count
