"""A fixed set of cores standing in for :class:`streams.tables.PartitionCores` in view tests.

The HTTP views read a worker's partitions through a small surface (readiness, the partitions
held, each one's shard with its core and durable counts, the rebalance epoch); this serves
that surface from cores built in the test, one partition per core, all of them held.
"""

from __future__ import annotations

from dataclasses import replace

from engine.config import Config
from engine.core import Core


class StaticShard:
    def __init__(self, core: Core) -> None:
        self.core = core

    def counts(self) -> dict[str, int]:
        return {"duplicate": 0, "invalid": 0}


class StaticCores:
    """Cores ``[c0, c1, …]`` as partitions ``0, 1, …`` of a ready worker."""

    def __init__(self, cores: list[Core]) -> None:
        self.cores = cores
        self.ready = True
        self.epoch = 0
        base = Config()
        self.config = replace(base, topics=replace(base.topics, partitions=len(cores)))

    def active_cores(self) -> list[Core]:
        return self.cores

    def partitions(self) -> list[int]:
        return list(range(len(self.cores)))

    def get(self, partition: int) -> StaticShard:
        return StaticShard(self.cores[partition])

    def counts(self) -> dict[str, int]:
        return {"duplicate": 0, "invalid": 0}
