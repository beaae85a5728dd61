"""A real single-node Apache Kafka broker (KRaft) on loopback, for development and tests.

Why a real broker: the engine's guarantees (partitioning, consumer groups, offsets) are
Kafka's, so tests and the newcomer demo run against Kafka itself, not a mock. Why Maven: the
machine may have no Docker and no general internet, but Maven Central is reachable; the
official jars are resolved once into a cache and reused, so later starts need neither.

Layout: ``<cache>/kafka/<version>/`` holds ``pom.xml`` and ``lib/*.jar``; the cache root is
``$KPI_ENGINE_CACHE``, default ``~/.cache/kpi-engine``. Each broker owns a data directory with
``server.properties``, ``log4j2.properties``, ``server.log``, Kafka's log dirs under ``data/``
and ``state.json`` (pid, bootstrap, data_dir) so another process can report on or stop it.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from engine.config import KafkaConfig
from engine.kafka_client import wait_for_broker
from engine.kafka_secure import BrokerSecurity, SecureFiles

DEFAULT_VERSION = "4.1.2"
LOG4J_VERSION = "2.24.3"  # the log4j2 release Kafka 4.1 is built against
CACHE_ENV = "KPI_ENGINE_CACHE"
# A small heap, C1-only JIT and the serial GC: less memory and CPU on a machine shared with tests.
JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true")

Progress = Callable[[str], None]


class KafkaLocalError(RuntimeError):
    """The local broker cannot be provided; the message says what is missing and what to do."""


def _quiet(message: str) -> None:
    """The default progress callback: say nothing."""


def default_cache_dir(version: str = DEFAULT_VERSION) -> Path:
    """Where the jars of ``version`` are cached: ``$KPI_ENGINE_CACHE/kafka/<version>``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kpi-engine"
    return Path(root) / "kafka" / version


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kpi-engine</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
        <configuration><outputDirectory>{lib}</outputDirectory></configuration>
      </plugin>
    </plugins>
  </build>
</project>
"""

# Console only: the broker's stdout and stderr go to <data_dir>/server.log, so JVM errors
# that happen before log4j starts end up in the same file.
_LOG4J2 = """status = warn
shutdownHook = disable
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def ensure_kafka_jars(version: str = DEFAULT_VERSION, cache_dir: Path | None = None,
                      progress: Progress | None = None) -> Path:
    """Return the directory of Kafka ``version``'s jars, resolving them with Maven if not cached.

    A ``.complete`` marker is written only after Maven succeeded, and a lock file serialises
    concurrent first runs, so an interrupted download is retried instead of half-used.
    """
    say = progress or _quiet
    cache = Path(cache_dir) if cache_dir else default_cache_dir(version)
    lib = cache / "lib"
    if (lib / ".complete").exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (lib / ".complete").exists():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaLocalError(
                f"Maven ('mvn') is not on PATH; it is needed once to download Kafka {version} "
                f"from Maven Central into {lib}. Install it (apt-get install maven) and retry.")
        shutil.rmtree(lib, ignore_errors=True)
        (cache / "pom.xml").write_text(_POM.format(version=version, log4j=LOG4J_VERSION, lib=lib))
        say(f"resolving Kafka {version} jars from Maven Central into {lib} (first run only)")
        started = time.monotonic()
        result = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy-dependencies"],
            cwd=cache, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KafkaLocalError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} "
                f"(exit {result.returncode}); check access to Maven Central or a mirror in "
                f"~/.m2/settings.xml.\n{_maven_errors(result.stdout + result.stderr)}")
        (lib / ".complete").write_text(version + "\n")
        jars = len(list(lib.glob("*.jar")))
        say(f"resolved {jars} jars in {time.monotonic() - started:.1f}s")
    return lib


def _maven_errors(output: str) -> str:
    """Maven's own error lines, without the generic help text that follows them."""
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)  # Debian's Maven colours even with -B
    lines = [line for line in output.splitlines() if line.strip()]
    if "[ERROR]" in (stripped := [line.strip() for line in lines]):
        lines = lines[:stripped.index("[ERROR]")]
    return "\n".join(lines[-10:])


def find_java() -> str:
    """The ``java`` to run Kafka with: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaLocalError(
            "Java is not installed or not on PATH (and JAVA_HOME is not set); Kafka 4 needs "
            "Java 17 or newer: apt-get install openjdk-17-jre-headless, or set JAVA_HOME.")
    return java


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True, slots=True)
class KafkaState:
    """What ``state.json`` records about a running broker."""

    pid: int
    bootstrap: str
    data_dir: str
    version: str
    log_file: str

    @property
    def running(self) -> bool:
        return _is_broker_process(self.pid, Path(self.data_dir))


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / "state.json"


def read_state(data_dir: Path) -> KafkaState | None:
    """The recorded broker of ``data_dir``, or None if none was started there."""
    try:
        return KafkaState(**json.loads(state_path(data_dir).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _is_broker_process(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is alive and is the Kafka of ``data_dir``: not a zombie, not a reused pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to a liveness check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    argv = cmdline.split(b"\0")
    return b"kafka.Kafka" in argv and str(data_dir.resolve() / "server.properties").encode() in argv


def stop_pid(pid: int, data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the broker ``pid`` of ``data_dir`` and its process group; False if it was not running.

    SIGTERM lets Kafka shut down cleanly (its log is then recovered instantly next time);
    SIGKILL after ``timeout`` makes sure nothing is left behind.
    """
    if not _is_broker_process(pid, data_dir):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)  # started with its own session, so pgid == pid
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _is_broker_process(pid, data_dir):
                return True
            time.sleep(0.1)
    raise KafkaLocalError(f"Kafka (pid {pid}) did not exit even after SIGKILL")


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion in a fresh event loop, even if the caller is inside one."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class LocalKafka:
    """One KRaft broker+controller on 127.0.0.1, owning ``data_dir``.

    Usable as a context manager. ``port=0`` picks a free broker port; the controller port is
    always picked freely. An existing formatted ``data_dir`` is reused, so topics survive a
    restart.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int = 0,
                 version: str = DEFAULT_VERSION, cache_dir: Path | None = None,
                 progress: Progress | None = None, startup_timeout: float = 90.0,
                 security: BrokerSecurity | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        # SASL_SSL with SCRAM users, a run-time CA and ACLs (engine/kafka_secure.py)
        self.security = security
        self.secure: SecureFiles | None = None
        self.port = port
        self.version = version
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(version)
        self.startup_timeout = startup_timeout
        self._say = progress or _quiet
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.bootstrap = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def start(self) -> None:
        """Resolve jars if needed, format storage on first use, start the broker, wait for it."""
        existing = read_state(self.data_dir)
        if existing and existing.running:
            raise KafkaLocalError(f"a Kafka broker already runs on {self.data_dir} "
                                  f"(pid {existing.pid}, {existing.bootstrap})")
        if self.security and (self.data_dir / "data" / "meta.properties").exists():
            # SCRAM users are written when the storage is formatted, with fresh passwords
            raise KafkaLocalError(f"a SASL_SSL broker needs a new data directory; "
                                  f"{self.data_dir} was formatted before")
        java = find_java()
        lib = ensure_kafka_jars(self.version, self.cache_dir, self._say)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        picked = [p for p in free_ports(2) if p != self.port]
        port, controller_port = (self.port, picked[0]) if self.port else picked[:2]
        self.bootstrap = f"127.0.0.1:{port}"
        properties = self.data_dir / "server.properties"
        properties.write_text(self._secure_properties(port, controller_port)
                              if self.security else self._server_properties(port,
                                                                             controller_port))
        log4j_config = self.data_dir / "log4j2.properties"
        log4j_config.write_text(_LOG4J2)
        classpath = ["-cp", str(lib / "*"), f"-Dlog4j2.configurationFile={log4j_config}"]
        if not (self.data_dir / "data" / "meta.properties").exists():
            self._format(java, classpath, properties)
        self._say(f"starting Kafka {self.version} on {self.bootstrap} (log: {self.log_file})")
        started = time.monotonic()
        with open(self.log_file, "ab") as log:
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                [java, *JVM_OPTIONS, *classpath, "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        state = KafkaState(self._process.pid, self.bootstrap, str(self.data_dir), self.version,
                           str(self.log_file))
        state_path(self.data_dir).write_text(json.dumps(asdict(state), indent=2) + "\n")
        try:
            _run(self._wait_ready())
            if self.secure is not None:
                self._say(f"creating {len(self.secure.security.acls)} ACL bindings")
                self.secure.create_acls(java, classpath)
        except BaseException:
            self.stop()
            raise
        self._say(f"Kafka ready at {self.bootstrap} in {time.monotonic() - started:.1f}s "
                  f"(pid {self.pid})")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker and forget its state; safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            self._say(f"stopping Kafka (pid {process.pid})")
            stop_pid(process.pid, self.data_dir, timeout)
            process.wait()
        state_path(self.data_dir).unlink(missing_ok=True)

    def wait(self) -> int:
        """Block until the broker exits on its own; return its exit status."""
        return self._process.wait() if self._process else 0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _server_properties(self, port: int, controller_port: int) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.data_dir / "data",
            # One node: every internal topic must make do with one replica.
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "num.partitions": 1,
            "auto.create.topics.enable": "true",
            # Tests join groups constantly; waiting for more members only slows them down.
            "group.initial.rebalance.delay.ms": 0,
            # Small footprint on a shared machine.
            "num.network.threads": 2,
            "num.io.threads": 2,
            "log.segment.bytes": 16 * 1024 * 1024,
            "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _secure_properties(self, port: int, controller_port: int) -> str:
        """:meth:`_server_properties` with the one client listener on SASL_SSL."""
        assert self.security is not None
        self.secure = SecureFiles(self.data_dir, self.security)
        self.secure.write_admin_properties(f"127.0.0.1:{port}")
        settings = dict(line.split("=", 1) for line in
                        self._server_properties(port, controller_port).splitlines())
        settings.update({
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            **{key: str(value) for key, value in self.secure.server_properties(port).items()},
        })
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def client_config(self, user: str = "admin", password: str | None = None) -> KafkaConfig:
        """``[kafka]`` settings to reach this broker as ``user`` (PLAINTEXT when not secure)."""
        if self.secure is None:
            return KafkaConfig(bootstrap_servers=self.bootstrap)
        return self.secure.client_config(self.bootstrap, user, password)

    def _format(self, java: str, classpath: list[str], properties: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        self._say(f"formatting KRaft storage in {self.data_dir / 'data'}")
        result = subprocess.run(
            [java, *JVM_OPTIONS, *classpath, "kafka.tools.StorageTool", "format",
             f"--cluster-id={cluster_id}", f"--config={properties}",  # ids may start with "-"
             *(self.secure.format_arguments() if self.secure else [])],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise KafkaLocalError(f"formatting Kafka storage in {self.data_dir} failed:\n"
                                  f"{(result.stdout + result.stderr).strip()}")

    async def _wait_ready(self) -> None:
        process = self._process
        assert process is not None
        target: str | KafkaConfig = self.client_config() if self.secure else self.bootstrap
        waiter = asyncio.ensure_future(wait_for_broker(target, self.startup_timeout))
        while not waiter.done():
            if process.poll() is not None:
                waiter.cancel()
                raise KafkaLocalError(f"Kafka exited with status {process.returncode} while "
                                      f"starting.\n{self.log_excerpt()}")
            await asyncio.wait({waiter}, timeout=0.2)
        try:
            waiter.result()
        except TimeoutError as exc:
            raise KafkaLocalError(f"{exc}.\n{self.log_excerpt()}") from None

    def log_excerpt(self, tail: int = 12) -> str:
        """This run's first errors and last lines of the broker log, for error messages.

        The tail alone is not enough: a failed broker spends its last lines shutting down.
        """
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_offset)
                lines = log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return f"{self.log_file} was not written"
        errors = [i for i, line in enumerate(lines) if " ERROR " in line or " FATAL " in line]
        first_errors = [line for i in errors[:2] for line in lines[i:i + 2]]
        parts = [f"From {self.log_file}:"]
        if first_errors:
            parts += ["first errors:", *first_errors, "last lines:"]
        return "\n".join(parts + lines[-tail:])


# --- a cluster of several nodes, for fault tests -----------------------------------------------

CLUSTER_FILE = "cluster.json"


class LocalKafkaCluster:
    """Several KRaft nodes on 127.0.0.1 (each broker and controller), owning ``data_dir``.

    Why: the engine's fault tests need to lose a broker and keep going (replication factor 3,
    ``min.insync.replicas`` 2), which one node cannot show. Node *i* lives in
    ``data_dir/node-<i>/`` with the same files as a :class:`LocalKafka` (its own ``state.json``,
    so ``kpi-engine kafka status`` and ``stop`` see it); ``data_dir/cluster.json`` keeps the
    ports and the cluster id, so a restarted node or cluster comes back where it was. Nodes can
    be stopped, killed and started one by one (:meth:`stop_node`, :meth:`start_node`).
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, nodes: int = 3,
                 version: str = DEFAULT_VERSION, cache_dir: Path | None = None,
                 progress: Progress | None = None, startup_timeout: float = 120.0) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.data_dir = Path(data_dir).resolve()
        self.nodes = nodes
        self.version = version
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(version)
        self.startup_timeout = startup_timeout
        self._say = progress or _quiet
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self.ports: list[int] = []
        self.controller_ports: list[int] = []
        self.cluster_id = ""

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def node_dir(self, node: int) -> Path:
        return self.data_dir / f"node-{node}"

    def node_bootstrap(self, node: int) -> str:
        return f"127.0.0.1:{self.ports[node]}"

    def pid(self, node: int) -> int | None:
        process = self._processes.get(node)
        return process.pid if process is not None and process.poll() is None else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Format the nodes on first use, start them all, wait until each answers."""
        self._load_or_pick_layout()
        java = find_java()
        lib = ensure_kafka_jars(self.version, self.cache_dir, self._say)
        for node in range(self.nodes):
            self._launch(node, java, lib)
        try:
            for node in range(self.nodes):
                self._wait_node(node)
        except BaseException:
            self.stop()
            raise
        self._say(f"Kafka cluster of {self.nodes} ready at {self.bootstrap}")

    def start_node(self, node: int) -> None:
        """Start one stopped node again and wait until it answers."""
        self._launch(node, find_java(), ensure_kafka_jars(self.version, self.cache_dir,
                                                          self._say))
        self._wait_node(node)

    def stop_node(self, node: int, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop one node: cleanly (SIGTERM), or ``kill`` it (SIGKILL, like a lost machine)."""
        process = self._processes.pop(node, None)
        if process is not None and process.poll() is None:
            if kill:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                stop_pid(process.pid, self.node_dir(node), timeout)
            process.wait()
        state_path(self.node_dir(node)).unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node; safe to call twice."""
        for node in list(self._processes):
            self.stop_node(node, timeout=timeout)

    def _load_or_pick_layout(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        layout_file = self.data_dir / CLUSTER_FILE
        try:
            layout = json.loads(layout_file.read_text())
            if layout["nodes"] != self.nodes:
                raise KafkaLocalError(f"{self.data_dir} holds a cluster of {layout['nodes']} "
                                      f"nodes, not {self.nodes}")
            self.ports, self.controller_ports = layout["ports"], layout["controller_ports"]
            self.cluster_id = layout["cluster_id"]
        except FileNotFoundError:
            ports = free_ports(2 * self.nodes)
            self.ports, self.controller_ports = ports[:self.nodes], ports[self.nodes:]
            self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            layout_file.write_text(json.dumps({
                "nodes": self.nodes, "ports": self.ports,
                "controller_ports": self.controller_ports, "cluster_id": self.cluster_id,
            }, indent=2) + "\n")

    def _launch(self, node: int, java: str, lib: Path) -> None:
        directory = self.node_dir(node)
        existing = read_state(directory)
        if existing and existing.running:
            raise KafkaLocalError(f"node {node} of {self.data_dir} already runs "
                                  f"(pid {existing.pid})")
        directory.mkdir(parents=True, exist_ok=True)
        properties = directory / "server.properties"
        properties.write_text(cluster_node_properties(
            node, self.ports, self.controller_ports, directory / "data"))
        log4j_config = directory / "log4j2.properties"
        log4j_config.write_text(_LOG4J2)
        classpath = ["-cp", str(lib / "*"), f"-Dlog4j2.configurationFile={log4j_config}"]
        if not (directory / "data" / "meta.properties").exists():
            result = subprocess.run(
                [java, *JVM_OPTIONS, *classpath, "kafka.tools.StorageTool", "format",
                 f"--cluster-id={self.cluster_id}", f"--config={properties}"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
            if result.returncode != 0:
                raise KafkaLocalError(f"formatting node {node} in {directory} failed:\n"
                                      f"{(result.stdout + result.stderr).strip()}")
        log_file = directory / "server.log"
        self._say(f"starting Kafka node {node} on {self.node_bootstrap(node)} (log: {log_file})")
        with open(log_file, "ab") as log:
            process = subprocess.Popen(
                [java, *JVM_OPTIONS, *classpath, "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self._processes[node] = process
        state = KafkaState(process.pid, self.node_bootstrap(node), str(directory), self.version,
                           str(log_file))
        state_path(directory).write_text(json.dumps(asdict(state), indent=2) + "\n")

    def _wait_node(self, node: int) -> None:
        process = self._processes[node]

        async def wait() -> None:
            waiter = asyncio.ensure_future(
                wait_for_broker(self.node_bootstrap(node), self.startup_timeout))
            while not waiter.done():
                if process.poll() is not None:
                    waiter.cancel()
                    raise KafkaLocalError(f"Kafka node {node} exited with status "
                                          f"{process.returncode} while starting; see "
                                          f"{self.node_dir(node) / 'server.log'}")
                await asyncio.wait({waiter}, timeout=0.2)
            try:
                waiter.result()
            except TimeoutError as exc:
                raise KafkaLocalError(f"{exc}; see {self.node_dir(node) / 'server.log'}") \
                    from None

        _run(wait())


def cluster_node_properties(node: int, ports: list[int], controller_ports: list[int],
                            log_dir: Path) -> str:
    """``server.properties`` of node ``node`` of a loopback cluster: every internal topic
    replicated to 3 nodes (or all, if fewer) with 2 in sync (or 1), like production."""
    n = len(ports)
    replicas = min(3, n)
    in_sync = min(2, replicas)
    voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controller_ports))
    settings = {
        "process.roles": "broker,controller",
        "node.id": node + 1,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{ports[node]},"
                     f"CONTROLLER://127.0.0.1:{controller_ports[node]}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{ports[node]}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": log_dir,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 8,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": in_sync,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": in_sync,
        "default.replication.factor": replicas,
        "min.insync.replicas": in_sync,
        "num.partitions": 1,
        "auto.create.topics.enable": "true",
        "group.initial.rebalance.delay.ms": 0,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "log.segment.bytes": 16 * 1024 * 1024,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())
