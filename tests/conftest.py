"""Shared fixtures: one real Kafka broker per test session, and names unique to each test."""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from web_access import WebAccess, make_web_access

from engine.kafka_local import LocalKafka
from engine.kafka_secure import BrokerSecurity


#: ``KPI_TEST_KAFKA_SECURITY=sasl_ssl`` runs the session broker with SASL_SSL only (SCRAM-SHA-512,
#: a CA made at run time, ACLs enforced) and points every engine configuration at it through
#: ``KPI_KAFKA_*`` variables, so the tests that start workers and CLI commands from a config
#: file run unchanged against a secure broker (as the super user; ACLs for the worker's own
#: principal are tested in test_kafka_secure.py).
SECURITY_ENV = "KPI_TEST_KAFKA_SECURITY"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real single-node Kafka on 127.0.0.1 for the whole session; use ``.bootstrap``.

    Started on first use (the first run ever downloads the jars with Maven) and stopped at the
    end of the session, also when tests fail. Tests share it, so they must use ``unique_name``
    for topics and consumer groups.
    """
    secure = os.environ.get(SECURITY_ENV, "").lower() == "sasl_ssl"
    security = BrokerSecurity.with_users() if secure else None
    with LocalKafka(tmp_path_factory.mktemp("kafka"), security=security) as kafka:
        with pytest.MonkeyPatch.context() as env:
            if secure:
                client = kafka.client_config()
                for key, value in (("SECURITY_PROTOCOL", client.security_protocol),
                                   ("SASL_MECHANISM", client.sasl_mechanism),
                                   ("SASL_USERNAME", client.sasl_username),
                                   ("SASL_PASSWORD", client.sasl_password),
                                   ("SSL_CAFILE", client.ssl_cafile)):
                    env.setenv(f"KPI_KAFKA_{key}", str(value))
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


@pytest.fixture(scope="session")
def web_access(tmp_path_factory: pytest.TempPathFactory) -> WebAccess:
    """How the live tests reach their workers: openly, or with ``KPI_TEST_WEB_SECURITY=
    tokens_tls`` with tokens of every audience and HTTPS (tests/web_access.py). A test puts
    ``web_access.config_toml()`` into its worker's configuration and talks through it."""
    return make_web_access(tmp_path_factory.mktemp("web-access"))
