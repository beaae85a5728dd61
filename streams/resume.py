"""Where the apply stage resumes reading the bundles topic: never past a bundle not yet applied.

Why this exists: Faust drops records it fetched while its flow is suspended (during a
rebalance and the table recovery that follows) and relies on seeking every partition back to
its *committed* offset before the flow resumes (``Consumer.perform_seek``). aiokafka's
``seek_to_committed`` seeks only where the committed offset is above 0, so a bundles partition
with no commit yet — a new app, or a worker killed within Faust's commit interval (2.8 s) of
its first round — keeps the position of the records that were dropped. Those bundles were
never applied, and nothing reads them again: seen as a worker restarted after ``kill -9``
that was ready, with its ingest caught up, while its counts stayed thousands of events short
(``tests/test_worker_equivalence.py``, about one run in three on a loaded machine).

What the apply stage knows better than the committed offset: the ledger. A ledger record is
keyed by the last bundle offset of its round (:func:`streams.ledger.ledger_key`), and a record
is written only once every bundle up to it was taken, so ``key offset + 1`` of a partition's
newest record is a point before which nothing is missing; a round the apply stage finishes
moves it further. That holds because the apply stage never applies past a gap: a bundle
after one the stream skipped is not applied, and the partition is read again from the first
missing bundle (:meth:`streams.apply.Apply.process`). :class:`BundlePositions` keeps the
point per partition, and :meth:`BundlePositions.install` makes Faust's seek-back go to it
rather than to the committed offset, which Faust moves past skipped bundles too. Reading from
an earlier offset than necessary costs replays, which the shard recognises
(:meth:`streams.ledger.Shard.take_bundle`); reading from a later one loses bundles.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from faust.types import TP

log = logging.getLogger(__name__)


class BundlePositions:
    """Per bundles partition, the offset before which every bundle's effects are durable."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._next: dict[int, int] = {}

    def get(self, partition: int) -> int:
        return self._next.get(partition, 0)

    def advance(self, partition: int, next_offset: int) -> None:
        """Bundles below ``next_offset`` of ``partition`` are applied (or durable in the
        ledger): resuming there loses nothing. Never moves back."""
        if next_offset > self._next.get(partition, 0):
            self._next[partition] = next_offset

    def reset(self, partition: int, next_offset: int) -> None:
        """The partition's shard was rebuilt from a ledger that ends at ``next_offset``: resume
        there, even below the point this worker had reached (its own rounds may be fenced as a
        zombie's, :mod:`streams.fencing`, and their bundles must be applied again)."""
        self._next[partition] = next_offset

    def targets(self, committed: Mapping[Any, int | None]) -> dict[Any, int]:
        """The bundles partitions whose committed offset is not the known point, and where to
        seek them instead: behind it costs replays; missing or ahead of it loses bundles
        (Faust acknowledges, and so commits, the bundles the apply stage skipped at a gap)."""
        targets = {}
        for tp, offset in committed.items():
            if tp.topic != self.topic:
                continue
            point = self._next.get(tp.partition, 0)
            if point > 0 and offset != point:
                targets[tp] = point
        return targets

    def install(self, consumer: Any) -> None:
        """Make ``consumer`` (Faust's threaded aiokafka consumer) seek the bundles partitions
        to :meth:`targets` whenever it seeks back to committed offsets."""
        seek_to_committed = consumer.seek_to_committed
        thread = consumer._thread

        async def seek_to_committed_or_known() -> Mapping[TP, int]:
            committed = dict(await seek_to_committed())
            targets = self.targets(committed)
            if targets:
                client = thread._ensure_consumer()

                async def seek() -> None:  # in the consumer's thread, like Faust's own seeks
                    for tp, offset in targets.items():
                        client.seek(tp, offset)

                await thread.call_thread(seek)
                log.info("bundles resumed where the ledger ends, not at the committed offset: "
                         "%s", {tp.partition: (committed.get(tp), offset)
                                for tp, offset in sorted(targets.items())})
                committed.update(targets)
            return committed

        consumer.seek_to_committed = seek_to_committed_or_known
