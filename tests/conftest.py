"""Shared fixtures: one real Kafka broker per test session, and names unique to each test."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from engine.kafka_local import LocalKafka


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real single-node Kafka on 127.0.0.1 for the whole session; use ``.bootstrap``.

    Started on first use (the first run ever downloads the jars with Maven) and stopped at the
    end of the session, also when tests fail. Tests share it, so they must use ``unique_name``
    for topics and consumer groups.
    """
    with LocalKafka(tmp_path_factory.mktemp("kafka")) as kafka:
        yield kafka


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A function ``unique_name(prefix)`` returning a fresh topic or group name on each call.

    Names carry the test's name (for reading broker logs) and a random token (so reruns
    against the same broker never see an earlier run's data).
    """
    test = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name).strip("-")[:80]
    token = uuid.uuid4().hex[:8]
    counter = itertools.count()

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test}-{token}-{next(counter)}"

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``fault`` (long fault-injection runs) run only when asked: ``-m fault``."""
    if "fault" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in fault test: run with -m fault")
    for item in items:
        if "fault" in item.keywords:
            item.add_marker(skip)
