"""The Kafka broker a benchmark runs against: the one given, or a local one for the run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.kafka_local import LocalKafka


@contextmanager
def broker(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    """Yield ``bootstrap`` if given, else start a single-node broker under ``workdir`` for the
    duration (stopped afterwards) and yield its address."""
    if bootstrap:
        yield bootstrap
        return
    with LocalKafka(workdir / "kafka") as kafka:
        yield kafka.bootstrap
