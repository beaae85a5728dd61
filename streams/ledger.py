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

Retention (SPEC §1.3 ``[limits] retention_days``) bounds the ledger as it bounds the core.
Every so often (:mod:`streams.retention`) a partition's shard forgets what lies before the
horizon, ``now − retention_days`` (:meth:`Shard.evict`, :func:`engine.retention.evict`), and
its ledger is *compacted* (:func:`compact`): the entries of its live records are rewritten,
without those of forgotten route keys, into a new record, and the records it replaces are
deleted. Events before the horizon are rejected ``too_late`` at ingest, so an input message of a
forgotten key that comes back is dead-lettered, never counted again. Decisions:

- ``invalid`` and ``duplicate`` markers carry no event time, so none can be judged old; they
  are all folded into one ``summary`` entry (``payload`` ``{"duplicate": n, "invalid":
  {reason: n}, "team_first": {...}, "rep_first": {...}}``; route key ``""``, source ``-1,
  -1``), so both totals are kept forever in a few bytes. The summary also carries the core's
  roster (first instant per team and rep, which eviction keeps: reports list every team and
  rep ever seen), since the entries that built it may be gone. What a marker also carried,
  its source offset, is kept for route keys that are still known, as one ``source`` entry per
  key and input partition (``payload`` ``None``): the highest offset taken, so replays of
  those messages are still recognised.
- an entry is dropped when its route key is no longer in ``Shard.sources`` once evicted: the
  entities :func:`engine.retention.evict` dropped, expired ``A|``/``S|`` day keys
  (:func:`engine.retention.bucket_key_expired`). Entries of keys still known are kept whole,
  old facts included (a customer still subscribed needs its old start), so a restore may bring
  back a few old day buckets of such entities; no report can see them (engine.retention).
- the new record is keyed ``p|<upto>|r<horizon>|<part>|<parts>`` (:func:`compacted_key`),
  ``upto`` being the highest offset among the keys it replaces; it is written in parts of at
  most ``max_bytes`` (the broker's message limit), all parts before any deletion. Which records
  a restore reads is :func:`live_keys`: the newest *complete* compaction and the plain records
  after its ``upto``. A crash half-way leaves either an incomplete compaction (ignored: the old
  records are all still there) or old records not yet deleted (ignored: superseded, and deleted
  by the next pass); never both counted.

Every key also names its writer's *epoch* (``|e<n>`` at its end; none: 0), and a partition's
ledger holds *fence* records (``p|<from>|f<n>``) written by each new owner before its first
round: a record of an older epoch covering bundles from a fence's ``from`` on was written by a
zombie owner and is read by nobody (:mod:`streams.fencing`, :func:`live_keys`).

Nothing here does I/O; :mod:`streams.apply` and :mod:`streams.ingest` move the bytes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

import orjson

from engine.core import Core
from engine.event import Event
from engine.retention import bucket_key_expired, evict
from engine.routing import ASPECT_PRIMARY, routes
from streams.fencing import is_fenced, is_fence
from streams.fencing import parse as parse_key
from streams.logsafe import exception_summary

log = logging.getLogger(__name__)

INVALID = "invalid"
DUPLICATE = "duplicate"
SOURCE = "source"  # compacted ledger only: the highest offset taken for a key and partition
SUMMARY = "summary"  # compacted ledger only: folded markers and the team and rep roster

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
            e.opened_at, e.stage, e.expected_close]


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


def ledger_key(partition: int, last_bundle_offset: int, epoch: int = 0) -> bytes:
    """The key of a ledger record: unique, and in write order within the partition.

    Only a round that takes something new writes a record, and everything up to its last
    bundle was taken by the rounds before it, so a later record always has a higher offset.
    ``epoch``: the writer's (:mod:`streams.fencing`; 0, the ledgers before fencing, is left
    out of the key).
    """
    if epoch:
        return b"%d|%020d|e%d" % (partition, last_bundle_offset, epoch)
    return b"%d|%020d" % (partition, last_bundle_offset)


def compacted_key(partition: int, upto: int, horizon: int, part: int, parts: int,
                  epoch: int = 0) -> bytes:
    """The key of part ``part`` of ``parts`` of a compacted record (see the module docstring)."""
    key = b"%d|%020d|r%020d|%d|%d" % (partition, upto, horizon, part, parts)
    return key + b"|e%d" % epoch if epoch else key


def live_keys(keys: Iterable[bytes], fenced: list[bytes] | None = None) -> set[bytes]:
    """The ledger keys a restore reads: the newest complete compaction and the records after it,
    leaving out fence records and the records they fence (:mod:`streams.fencing`, which are
    appended to ``fenced`` when given)."""
    parsed = []
    fences = []
    for key in keys:
        kind, offset, epoch = parse_key(key)
        if kind == "fence":
            fences.append((epoch, offset))
        else:
            parsed.append((key, kind, offset, epoch))
    plain: dict[bytes, int] = {}
    compactions: dict[tuple[int, int, int, int], list[bytes]] = {}
    for key, kind, offset, epoch in parsed:
        if fences and is_fenced(epoch, offset, fences):
            if fenced is not None:
                fenced.append(key)
            continue
        if kind == "plain":
            plain[key] = offset
        else:
            fields = key.split(b"|")
            compactions.setdefault((offset, int(fields[2][1:]), int(fields[4]), epoch),
                                   []).append(key)
    complete = [group for group, parts in compactions.items() if len(parts) == group[2]]
    if not complete:
        return set(plain)
    newest = max(complete)
    return {key for key, offset in plain.items() if offset > newest[0]} | set(compactions[newest])


def key_offset(key: bytes) -> int:
    """The bundle offset a ledger key (plain or compacted) covers up to."""
    return int(key.split(b"|", 2)[1])


def compact(shard: Shard, records: list[tuple[bytes, bytes]], partition: int, horizon: int,
            max_bytes: int, epoch: int = 0
            ) -> tuple[list[tuple[bytes, bytes]], list[bytes]] | None:
    """The compacted record parts replacing ``records`` (a partition's stored records), and the
    keys to delete; ``None`` when there is nothing to forget or fold.

    Call after :meth:`Shard.evict`: an entry is kept when its route key is still in
    ``shard.sources``. Only :func:`live_keys` records are read (others are superseded).
    :class:`Compaction` does the same a few records at a time.
    """
    compaction = Compaction(shard, partition, horizon, max_bytes, epoch)
    live = live_keys(key for key, _ in records)
    for key, value in records:
        compaction.feed(key, value, key in live)
    return compaction.finish()


class Compaction:
    """:func:`compact` in steps, so that the retention pass can yield to the event loop
    between them (:mod:`streams.retention`).

    Which route keys are kept is decided by ``shard.sources`` as it is when the compaction
    starts (right after :meth:`Shard.evict`): an apply round that runs between two steps and
    brings an item of a forgotten key back must not bring that key's old entries back too.
    """

    __slots__ = ("shard", "partition", "horizon", "max_bytes", "keep", "kept", "marked",
                 "duplicates", "invalid", "changed", "keys", "taken", "epoch", "upto")

    def __init__(self, shard: Shard, partition: int, horizon: int, max_bytes: int,
                 epoch: int = 0) -> None:
        self.shard = shard
        self.epoch = epoch  # the writer's (streams.fencing)
        #: the highest bundle offset of a live record fed: a fenced record's must not count
        #: (the owner's later rounds below it would not be live after the compaction)
        self.upto = -1
        self.partition = partition
        self.horizon = horizon
        self.max_bytes = max_bytes
        self.keep = frozenset(shard.sources)
        self.kept: list[bytes] = []
        self.marked: set[str] = set()
        self.duplicates = 0
        self.invalid: Counter[str] = Counter()
        self.changed = 0
        self.keys: list[bytes] = []
        #: (route key, input partition) -> highest source offset of a marker or ``source``
        #: entry fed so far: a marker not above it is a repeat (see :meth:`Shard.restore`)
        self.taken: dict[tuple[str, int], int] = {}

    def feed(self, key: bytes, value: bytes, live: bool) -> None:
        """One stored record; ``live``: whether :func:`live_keys` reads it. Fence records are
        kept as they are (they fence records written after the compaction too)."""
        if is_fence(key):
            return
        self.keys.append(key)
        if not live:
            self.changed += 1
            return
        self.upto = max(self.upto, key_offset(key))
        keep = self.keep
        for entry in orjson.loads(value):
            route_key, kind, payload = entry[0], entry[1], entry[2]
            if kind == SUMMARY:
                self.duplicates += payload["duplicate"]
                self.invalid.update(payload["invalid"])
                continue
            if kind in (DUPLICATE, INVALID, SOURCE):
                source = (route_key, entry[3])
                last = self.taken.get(source)
                new = last is None or entry[4] > last
                if new:
                    self.taken[source] = entry[4]
                if kind == DUPLICATE:
                    self.duplicates += new
                    self.changed += 1
                elif kind == INVALID:
                    if new:
                        self.invalid[payload] += 1
                    self.changed += 1
                if route_key in keep:
                    self.marked.add(route_key)
            elif route_key in keep:
                self.kept.append(_dumps(entry))
            else:
                self.changed += 1

    def finish(self) -> tuple[list[tuple[bytes, bytes]], list[bytes]] | None:
        """The record parts and the keys they replace; ``None`` if nothing changed."""
        if not self.changed or not self.keys or self.upto < 0:
            return None
        sources = self.shard.sources
        kept = self.kept
        for route_key in sorted(self.marked):
            last = sources.get(route_key)
            if last is None:
                continue
            pairs = ([(last & _PARTITION_MASK, last >> _PARTITION_BITS)] if type(last) is int
                     else sorted(last.items()))
            kept.extend(_dumps([route_key, SOURCE, None, p, offset]) for p, offset in pairs)
        core = self.shard.core
        kept.append(_dumps(["", SUMMARY, {"duplicate": self.duplicates,
                                          "invalid": dict(self.invalid),
                                          "team_first": core.team_first,
                                          "rep_first": core.rep_first}, -1, -1]))
        groups: list[list[bytes]] = [[]]
        size = 1  # a record is "[" + items joined by "," + "]"
        for item in kept:
            if size + len(item) + 1 > self.max_bytes and groups[-1]:
                groups.append([])
                size = 1
            groups[-1].append(item)
            size += len(item) + 1
        upto = self.upto
        parts = [(compacted_key(self.partition, upto, self.horizon, i, len(groups),
                                self.epoch), encode_bundle(group))
                 for i, group in enumerate(groups)]
        old = list(self.keys)
        if {key for key, _ in parts} & set(old):
            return None  # the same compaction again (same horizon, nothing new)
        return parts, old


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
            except Exception as exc:
                errors += 1
                # Never the item itself: it holds event content (people's names, amounts).
                where = item[3:5] if isinstance(item, list) and len(item) == 5 else "?"
                log.error("cannot apply a bundle item (input partition, offset %s): %s", where,
                          exception_summary(exc))
        return replays, errors

    def evict(self, horizon: int) -> int:
        """Forget state before ``horizon`` (µs): the core's, and the sources of dropped keys;
        the number of route keys forgotten (0: the ledger has nothing to compact away)."""
        dropped = set(evict(self.core, horizon))
        sources = self.sources
        forgotten = [k for k in sources if k in dropped or bucket_key_expired(k, horizon)]
        for key in forgotten:
            del sources[key]
        return len(forgotten)

    def restore(self, entries: Iterable[list]) -> int:
        """Re-apply ledger entries; return how many there were.

        Event entries may come in any order (the core is idempotent). A ``duplicate`` or
        ``invalid`` marker counts only if it is new, that is, if its source offset is above
        the highest already taken for its route key and input partition: records are read in
        the order they were written, so a repeat is a marker written twice, which a zombie
        owner of the partition (paused past its session timeout, then resumed) can do while
        the new owner writes the same round. Counting it again would double the counts, and
        compaction would make that permanent.

        The loop runs for every entry of every start (a million with two years of state), so
        :meth:`advance`'s two common cases are inlined, as in :meth:`take_bundle`.
        """
        advance = self.advance
        sources = self.sources
        apply = self.core.apply
        count = 0
        for key, kind, payload, partition, offset in entries:
            count += 1
            if kind == SUMMARY:
                self.duplicates += payload["duplicate"]
                self.invalid.update(payload["invalid"])
                for name in ("team_first", "rep_first"):
                    first = getattr(self.core, name)
                    for who, ts in payload[name].items():
                        if who not in first or ts < first[who]:
                            first[who] = ts
                continue
            last = sources.get(key)
            if last is None and partition <= _PARTITION_MASK:
                sources[key] = (offset << _PARTITION_BITS) | partition
                new = True
            elif type(last) is int and last & _PARTITION_MASK == partition:
                new = offset > last >> _PARTITION_BITS
                if new:
                    sources[key] = (offset << _PARTITION_BITS) | partition
            else:
                new = advance(key, partition, offset)
            if kind == SOURCE:
                continue
            if kind == DUPLICATE:
                self.duplicates += new
            elif kind == INVALID:
                if new:
                    self.invalid[payload] += 1
            else:
                apply(Event(*payload), kind)
        return count
