"""``kpi-engine kafka start|stop|status|fetch``: a local Kafka broker for development.

Why a subcommand: the newcomer demo and manual testing need a broker without Docker; ``start``
leaves it running in the background (its pid and address recorded in the data directory), so
``status`` and ``stop`` work from any later shell. ``--foreground`` keeps it attached instead.
Exit status: 0 success (``status``: running), 3 ``status``: not running, 1 cannot start or
stop.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from engine.kafka_local import (
    CLUSTER_FILE,
    KafkaLocalError,
    LocalKafka,
    LocalKafkaCluster,
    ensure_kafka_jars,
    read_state,
    state_path,
    stop_pid,
)
from engine.config import load_config
from engine.kafka_secure import BrokerSecurity, KafkaSecurityError, producer_acls, worker_acls

DEFAULT_DATA_DIR = Path(".kpi-engine") / "kafka"
NOT_RUNNING = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kafka", help="run a local single-node Kafka broker (KRaft) for development",
        description="Start, stop or inspect a local Apache Kafka broker on 127.0.0.1. "
                    "The first start downloads the Kafka jars with Maven.")
    parser.add_argument("action", choices=("start", "stop", "status", "fetch"),
                        help="fetch: only download the Kafka jars into the cache (setup uses it)")
    parser.add_argument("--port", type=int, default=0,
                        help="broker port on 127.0.0.1 (default: a free port)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"broker data and state directory (default: {DEFAULT_DATA_DIR})")
    parser.add_argument("--foreground", action="store_true",
                        help="with start: stay attached and stop the broker on Ctrl-C")
    parser.add_argument("--brokers", type=int, default=1,
                        help="with start: a cluster of this many KRaft nodes on loopback "
                             "(3: replication factor 3, min.insync.replicas 2; for fault "
                             "tests); ports are picked freely and kept in the data dir")
    parser.add_argument("--sasl-ssl", action="store_true",
                        help="with start (on a new data directory): SASL_SSL only, SCRAM-SHA-512 "
                             "users 'worker' and 'producer', a CA made now, and ACLs for the "
                             "topics of --config; writes each user's [kafka] section into "
                             "<data-dir>/tls/ (docs/security.md)")
    parser.add_argument("--config", metavar="FILE",
                        help="with --sasl-ssl: the engine configuration whose topics and app_id "
                             "the ACLs name (default: the built-in defaults)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "brokers", 1) > 1 and getattr(args, "sasl_ssl", False):
        print("kpi-engine kafka: --sasl-ssl starts a single broker; it does not combine with "
              "--brokers", file=sys.stderr)
        return 2
    if getattr(args, "brokers", 1) > 1 or _cluster_layout(args.data_dir):
        actions = {"start": _start_cluster, "stop": _stop_cluster, "status": _status_cluster,
                   "fetch": _fetch}
        return actions[args.action](args)
    actions = {"start": _start, "stop": _stop, "status": _status, "fetch": _fetch}
    return actions[args.action](args)


# -- a cluster (--brokers N): engine.kafka_local.LocalKafkaCluster -----------------------------

def _cluster_layout(data_dir: Path) -> dict | None:
    import json

    try:
        return json.loads((Path(data_dir) / CLUSTER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _start_cluster(args: argparse.Namespace) -> int:
    layout = _cluster_layout(args.data_dir)
    nodes = layout["nodes"] if layout else args.brokers
    cluster = LocalKafkaCluster(args.data_dir, nodes=nodes, progress=_progress)
    try:
        cluster.start()
    except KafkaLocalError as exc:
        print(f"kpi-engine kafka: {exc}", file=sys.stderr)
        return 1
    print(cluster.bootstrap, flush=True)
    if not args.foreground:
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


def _node_dirs(data_dir: Path) -> list[Path]:
    layout = _cluster_layout(data_dir) or {"nodes": 0}
    return [Path(data_dir) / f"node-{i}" for i in range(layout["nodes"])]


def _stop_cluster(args: argparse.Namespace) -> int:
    code = 0
    for directory in _node_dirs(args.data_dir):
        state = read_state(directory)
        if state is not None and state.running:
            _progress(f"stopping pid {state.pid}")
            try:
                stop_pid(state.pid, Path(state.data_dir))
            except KafkaLocalError as exc:
                print(f"kpi-engine kafka: {exc}", file=sys.stderr)
                code = 1
        state_path(directory).unlink(missing_ok=True)
    return code


def _status_cluster(args: argparse.Namespace) -> int:
    running = 0
    for directory in _node_dirs(args.data_dir):
        state = read_state(directory)
        if state is None or not state.running:
            print(f"{directory.name}: not running")
        else:
            running += 1
            print(f"{directory.name}: running {state.bootstrap} pid {state.pid} "
                  f"log {state.log_file}")
    return 0 if running else NOT_RUNNING


def _fetch(args: argparse.Namespace) -> int:
    try:
        lib = ensure_kafka_jars(progress=_progress)
    except KafkaLocalError as exc:
        print(f"kpi-engine kafka: {exc}", file=sys.stderr)
        return 1
    print(lib)
    return 0


def _progress(message: str) -> None:
    print(f"kafka: {message}", file=sys.stderr, flush=True)


def _start(args: argparse.Namespace) -> int:
    state = read_state(args.data_dir)
    if state and state.running:
        _progress(f"already running (pid {state.pid})")
        print(state.bootstrap)
        return 0
    security = _security(args) if args.sasl_ssl else None
    kafka = LocalKafka(args.data_dir, port=args.port, progress=_progress, security=security)
    try:
        kafka.start()
    except (KafkaLocalError, KafkaSecurityError) as exc:
        print(f"kpi-engine kafka: {exc}", file=sys.stderr)
        return 1
    print(kafka.bootstrap, flush=True)
    if security is not None:
        for user in ("worker", "producer"):
            _progress(f"[kafka] for {user}: {_write_client_section(kafka, user)}")
    if not args.foreground:
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        kafka.wait()
    except KeyboardInterrupt:
        pass
    finally:
        kafka.stop()
    return 0


def _security(args: argparse.Namespace) -> BrokerSecurity:
    config = load_config(args.config)
    return BrokerSecurity.with_users(
        "worker", "producer",
        acls=[*worker_acls("worker", config), *producer_acls("producer", config)])


def _write_client_section(kafka: LocalKafka, user: str) -> Path:
    """``<data-dir>/tls/<user>.toml`` (a [kafka] section) and its password file, both 0600."""
    client = kafka.client_config(user)
    directory = Path(kafka.data_dir) / "tls"
    password_file = directory / f"{user}.password"
    section = directory / f"{user}.toml"
    for path, text in ((password_file, f"{client.sasl_password}\n"), (section, "\n".join([
            "[kafka]", f'bootstrap_servers = "{client.bootstrap_servers}"',
            f'security_protocol = "{client.security_protocol}"',
            f'sasl_mechanism = "{client.sasl_mechanism}"', f'sasl_username = "{user}"',
            f'sasl_password_file = "{password_file}"', f'ssl_cafile = "{client.ssl_cafile}"',
            ""]))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    return section


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop(args: argparse.Namespace) -> int:
    state = read_state(args.data_dir)
    if state is None or not state.running:
        _progress("not running")
    else:
        _progress(f"stopping pid {state.pid}")
        try:
            stop_pid(state.pid, Path(state.data_dir))
        except KafkaLocalError as exc:
            print(f"kpi-engine kafka: {exc}", file=sys.stderr)
            return 1
    state_path(args.data_dir).unlink(missing_ok=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    state = read_state(args.data_dir)
    if state is None or not state.running:
        print("not running")
        return NOT_RUNNING
    print(f"running {state.bootstrap} pid {state.pid} log {state.log_file}")
    return 0
