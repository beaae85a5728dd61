"""SASL_SSL for the local broker: SCRAM-SHA-512 users, a CA made at run time, and ACLs.

Why run it for real: a security configuration that was never used against a broker is a
guess. With a :class:`BrokerSecurity` the local broker (:class:`engine.kafka_local.LocalKafka`)
listens with SASL_SSL only, knows its users from the start (SCRAM credentials written when
the storage is formatted), authorises every request (``allow.everyone.if.no.acl.found=false``)
and gets the ACLs given here, so tests can show that the worker runs with exactly its own
rights and that a wrong password, an untrusted certificate or a missing ACL is an error that
says so.

Layout: ``<data_dir>/tls/`` holds the CA (``ca.pem``), the broker's certificate and key
(``broker.pem``, PEM keystore) and ``admin.properties`` (the admin's client settings, 0600);
``AclSetup.java`` is run once per start with Java's single-file launcher to create the ACLs
through Kafka's own Admin client (aiokafka cannot create ACLs on Kafka 4).

Limits (docs/security.md): the KRaft controller listener stays PLAINTEXT on 127.0.0.1 (the
broker reaches its own controller through it, as ``User:ANONYMOUS``, which must therefore be a
super user); do not expose it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import Config, KafkaConfig
from engine.security.ca import LocalCA

MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"


class KafkaSecurityError(RuntimeError):
    """The secure local broker cannot be set up; the message says which step failed."""


@dataclass(frozen=True, slots=True)
class Acl:
    """Allow ``principal`` the ``operations`` on a resource (``TOPIC``, ``GROUP``, ``CLUSTER``)."""

    principal: str
    resource_type: str
    name: str
    operations: tuple[str, ...]
    pattern: str = "LITERAL"  # or PREFIXED

    def spec(self) -> str:
        return "|".join((f"User:{self.principal}", self.resource_type, self.pattern, self.name,
                         ",".join(self.operations)))


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """Users (name → password) and ACLs of a SASL_SSL local broker; ``admin`` is a super user."""

    users: dict[str, str] = field(default_factory=dict)
    acls: tuple[Acl, ...] = ()

    def __repr__(self) -> str:  # passwords never in reprs
        return f"BrokerSecurity(users={sorted(self.users)}, acls={len(self.acls)})"

    @classmethod
    def with_users(cls, *names: str, acls: Iterable[Acl] = ()) -> BrokerSecurity:
        """Random passwords for ``names`` (and the admin)."""
        users = {name: secrets.token_urlsafe(18) for name in (ADMIN, *names)}
        return cls(users=users, acls=tuple(acls))


def worker_acls(user: str, config: Config) -> list[Acl]:
    """What a worker needs and nothing more: its input, its dead-letter topic, the topics and
    consumer groups named after its ``app_id`` (bundles, ledger changelog, Faust's own)."""
    app_id, topics = config.worker.app_id, config.topics
    return [
        Acl(user, "TOPIC", topics.input, ("READ", "DESCRIBE", "CREATE")),
        # ALTER and the configs: the dead-letter watch gives a topic the broker auto-created
        # back its partitions and min.insync.replicas (streams/dead_letter_topic.py)
        Acl(user, "TOPIC", topics.dead_letter,
            ("WRITE", "DESCRIBE", "CREATE", "ALTER", "DESCRIBE_CONFIGS", "ALTER_CONFIGS")),
        Acl(user, "TOPIC", app_id, ("ALL",), "PREFIXED"),
        Acl(user, "GROUP", app_id, ("ALL",), "PREFIXED"),
        Acl(user, "CLUSTER", "kafka-cluster", ("IDEMPOTENT_WRITE", "DESCRIBE")),
    ]


def producer_acls(user: str, config: Config) -> list[Acl]:
    """What ``kpi-engine produce``/``generate`` needs: write (and create) the input topic."""
    return [
        Acl(user, "TOPIC", config.topics.input, ("WRITE", "DESCRIBE", "CREATE")),
        Acl(user, "CLUSTER", "kafka-cluster", ("IDEMPOTENT_WRITE",)),
    ]


def gateway_acls(user: str, config: Config) -> list[Acl]:
    """What ``kpi-engine gateway`` needs: write the input and the dead-letter topic, and own
    its compacted state topic (created at start, read back by partition assignment: no group)."""
    topics = config.topics
    return [
        Acl(user, "TOPIC", topics.input, ("WRITE", "DESCRIBE", "CREATE")),
        Acl(user, "TOPIC", topics.dead_letter, ("WRITE", "DESCRIBE", "CREATE")),
        Acl(user, "TOPIC", config.gateway.state_topic, ("READ", "WRITE", "DESCRIBE", "CREATE")),
        Acl(user, "CLUSTER", "kafka-cluster", ("IDEMPOTENT_WRITE",)),
    ]


class SecureFiles:
    """The TLS material and admin settings of one secure broker, under ``<data_dir>/tls``."""

    def __init__(self, data_dir: Path, security: BrokerSecurity) -> None:
        self.directory = Path(data_dir) / "tls"
        self.security = security
        self.ca = LocalCA(self.directory)
        issued = self.ca.issue("broker", ("127.0.0.1", "localhost"))
        # Kafka's PEM keystore: the private key and the certificate chain in one file.
        self.keystore = self.directory / "broker-keystore.pem"
        _write_private(self.keystore, issued.keyfile.read_text() + issued.certfile.read_text())
        self.admin_properties = self.directory / "admin.properties"

    def server_properties(self, port: int) -> dict[str, object]:
        password = self.security.users[ADMIN]
        jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN}" password="{password}";')
        return {
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": self.keystore,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.ca.certfile,
            "ssl.endpoint.identification.algorithm": "https",
            "authorizer.class.name":
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{ADMIN};User:ANONYMOUS",
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create every user's SCRAM credentials."""
        return [f"--add-scram={MECHANISM}=[name={name},password={password}]"
                for name, password in self.security.users.items()]

    def write_admin_properties(self, bootstrap: str) -> None:
        password = self.security.users[ADMIN]
        _write_private(self.admin_properties, "\n".join([
            f"bootstrap.servers={bootstrap}",
            "security.protocol=SASL_SSL",
            f"sasl.mechanism={MECHANISM}",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
            f'required username="{ADMIN}" password="{password}";',
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca.certfile}",
            "request.timeout.ms=20000",
        ]) + "\n")

    def client_config(self, bootstrap: str, user: str = ADMIN,
                      password: str | None = None) -> KafkaConfig:
        """The ``[kafka]`` section for ``user`` (its own password unless ``password``)."""
        return KafkaConfig(bootstrap_servers=bootstrap, security_protocol="SASL_SSL",
                           sasl_mechanism=MECHANISM, sasl_username=user,
                           sasl_password=self.security.users[user] if password is None
                           else password,
                           ssl_cafile=str(self.ca.certfile))

    def create_acls(self, java: str, classpath: list[str]) -> None:
        """Create :attr:`BrokerSecurity.acls` through Kafka's Admin client (one JVM run)."""
        if not self.security.acls:
            return
        source = self.directory / "AclSetup.java"
        source.write_text(_ACL_SETUP)
        result = subprocess.run(
            [java, *classpath, str(source), str(self.admin_properties),
             *(acl.spec() for acl in self.security.acls)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=180)
        if result.returncode != 0:
            raise KafkaSecurityError("creating the ACLs failed:\n"
                                     + (result.stdout + result.stderr).strip()[-2000:])


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


# Java's single-file launcher compiles and runs this against the broker's own jars.
_ACL_SETUP = """
import java.io.FileInputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.*;
import org.apache.kafka.common.resource.*;

public class AclSetup {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) { props.load(in); }
        List<AclBinding> bindings = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            String[] p = args[i].split("\\\\|");
            ResourcePattern pattern = new ResourcePattern(
                ResourceType.valueOf(p[1]), p[3], PatternType.valueOf(p[2]));
            for (String op : p[4].split(",")) {
                bindings.add(new AclBinding(pattern, new AccessControlEntry(
                    p[0], "*", AclOperation.valueOf(op), AclPermissionType.ALLOW)));
            }
        }
        try (Admin admin = Admin.create(props)) {
            admin.createAcls(bindings).all().get();
        }
        System.out.println("created " + bindings.size() + " ACLs");
    }
}
"""
