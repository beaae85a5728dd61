"""Rebuilding the KPI shards from ledger records, in one process, against ``kpi-engine report``.

    python benchmarks/bench_rebuild.py [--events FILE.jsonl] [--lines N] [--partitions 4]
                                       [--rounds 3] [--profile]

Why: a worker's start with a lot of state is mostly this rebuild (``bench_recovery.py``:
the changelog read is 3-4 s of a 34 s cold start), and it does what ``kpi-engine report`` does
(apply every event to a core), so the report's speed on the same file is the yardstick.

The ledger records are made as the worker makes them, without Kafka: each line goes to the
input partition ``kpi-engine produce`` gives it (murmur2 of its entity key), the input
partitions are read :data:`ROUND_MESSAGES` messages at a time in turn (one ingest batch each,
so a shard's records are not in time order, as in the worker), every line is decoded
(:class:`engine.decode.Decoder`), its items routed to their partition (``crc32(route key) %
partitions``, as the ingest stage does) and taken with
:meth:`streams.ledger.Shard.take_bundle`, one ledger record per partition and batch. The clock
checks of the live engine are not applied. The records are
cached next to the events file. Then, best of ``--rounds``, process CPU time, each
partition's shard is rebuilt with :func:`streams.tables.restore_shard` from its records as
the local store returns them (key order), with the garbage collector as in the worker, and
``replay_file`` (the report's load) runs on the same file. The rebuilt shards must give the
report's numbers (checked with ``build_report``).

``--baseline DIR`` (a checkout of another commit) times the rebuild with that version's code
and with this one's instead, in child processes taking turns, on the same records.

``--profile`` prints a cProfile of one rebuild (run with ``KPI_ENGINE_PURE=1`` to see the
Python frames of the compiled modules).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from zlib import crc32

#: The code measured: this checkout's, or (``--baseline``, in the child processes) another's.
CODE = os.environ.get("KPI_BENCH_CODE") or str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, CODE)

import orjson  # noqa: E402
from aiokafka.partitioner import murmur2  # noqa: E402
from bench_report import DEFAULT_CONFIG, ensure_default_file  # noqa: E402

from engine import native  # noqa: E402
from engine.config import Config, load_config  # noqa: E402
from engine.core import Core  # noqa: E402
from engine.decode import Decoder  # noqa: E402
from engine.event import Rejection  # noqa: E402
from engine.producer import entity_key  # noqa: E402
from engine.replay import replay_file  # noqa: E402
from engine.report import build_report  # noqa: E402
from engine.timestamps import parse_instant  # noqa: E402
from streams.heap import HeapKeeper  # noqa: E402
from streams.ledger import Shard, event_items, invalid_item, ledger_key  # noqa: E402
from streams.tables import PartitionCores, restore_shard  # noqa: E402

#: Input messages per apply round (the ingest stage's batch, streams.ingest.BATCH_RECORDS).
ROUND_MESSAGES = 5000
ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2026-11-01T00:00:00Z"


def make_records(lines: list[bytes], config: Config,
                 partitions: int) -> dict[int, list[tuple[bytes, bytes]]]:
    """Each partition's ledger records, as the worker would have written them."""
    decoder = Decoder(config)
    shards = {p: Shard(Core(config.calendar, config.pipeline)) for p in range(partitions)}
    records: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
    inputs: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    spread = 0
    for line in lines:
        key = entity_key(line)
        if key is None:
            spread += 1
            inputs[spread % partitions].append(line)
        else:
            inputs[(murmur2(key) & 0x7FFFFFFF) % partitions].append(line)
    batches = [(p, start, messages[start:start + ROUND_MESSAGES])
               for start in range(0, max(map(len, inputs.values())), ROUND_MESSAGES)
               for p, messages in inputs.items() if start < len(messages)]
    for round_no, (source, start, batch) in enumerate(batches):
        bundles: dict[int, list[list]] = {}
        for offset, line in enumerate(batch, start):
            event = decoder(line)
            if isinstance(event, Rejection):
                items = [invalid_item(event.reason, source, offset)]
            else:
                items = event_items(event, source, offset)
            for key, data in items:
                bundles.setdefault(crc32(key.encode()) % partitions, []).append(
                    orjson.loads(data))
        for p, items in bundles.items():
            entries: list[list] = []
            shards[p].take_bundle(items, entries, Counter(), Counter())
            if entries:
                records[p].append((ledger_key(p, round_no), orjson.dumps(entries)))
    return records


def save(path: Path, records: dict[int, list[tuple[bytes, bytes]]]) -> None:
    with open(path, "wb") as out:
        for p, items in records.items():
            for key, value in items:
                out.write(struct.pack("<III", p, len(key), len(value)) + key + value)


def load(path: Path) -> dict[int, list[tuple[bytes, bytes]]]:
    data = path.read_bytes()
    records: dict[int, list[tuple[bytes, bytes]]] = {}
    at = 0
    while at < len(data):
        p, klen, vlen = struct.unpack_from("<III", data, at)
        at += 12
        key = data[at:at + klen]
        at += klen
        records.setdefault(p, []).append((key, data[at:at + vlen]))
        at += vlen
    return records


def rebuild(records: dict[int, list[tuple[bytes, bytes]]], config: Config) -> list[Shard]:
    """The shards rebuilt as the worker rebuilds them (one after the other, heap kept)."""
    heap = HeapKeeper()
    cores = PartitionCores(config)
    shards = []
    for p in sorted(records):
        shard = cores.new_shard()
        restore_shard(shard, iter(sorted(records[p])))
        shards.append(shard)
        heap.freeze()
    return shards


def cpu(fn):
    started = time.process_time()
    result = fn()
    return time.process_time() - started, result


def compare(baseline: Path, cache: Path, args: argparse.Namespace, entries: int) -> int:
    """The rebuild's CPU seconds with the code of ``baseline`` and with this checkout's, in
    child processes taking turns (which goes first alternates by round); best of each."""
    versions = {"baseline": baseline, "this": ROOT}
    best: dict[str, float] = {}
    for round_ in range(args.rounds):
        order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
        for name in order:
            result = subprocess.run(
                [sys.executable, __file__, "--child", str(cache), "--config", args.config],
                capture_output=True, text=True, check=True, cwd=versions[name],
                env={**os.environ, "KPI_BENCH_CODE": str(versions[name])})
            outcome = orjson.loads(result.stdout.strip().splitlines()[-1])
            best[name] = min(best.get(name, float("inf")), outcome["rebuild"])
            assert Path(outcome["code"]) == versions[name], outcome
            print(f"  round {round_ + 1} [{name}]: rebuild {outcome['rebuild']:.2f} CPU s "
                  f"({outcome['build']})", flush=True)
    for name, seconds in best.items():
        print(f"{name} ({versions[name]}): rebuild {seconds:.2f} CPU s "
              f"({entries / seconds:,.0f} entries/s), best of {args.rounds}")
    print(f"baseline / this: {best['baseline'] / best['this']:.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", help="a JSONL file (default: the cached two-year v2 file)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--lines", type=int, default=0, help="only the first N lines")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--baseline", help="a checkout of another version to compare with")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # records file: one timed rebuild
    args = parser.parse_args(argv)
    config = load_config(args.config)
    HeapKeeper.configure()
    if args.child:
        records = load(Path(args.child))
        gc.collect()
        seconds, _ = cpu(lambda: rebuild(records, config))
        print(orjson.dumps({"rebuild": seconds, "build": native.status()[1],
                            "code": str(Path(native.__file__).parent.parent)}).decode())
        return 0
    path = Path(args.events) if args.events else ensure_default_file()
    print(f"code: {CODE}; build: {native.status()[1]}")
    cache = path.with_name(
        f"{path.stem}.ledger-{args.partitions}p-{args.lines or 'all'}-r{ROUND_MESSAGES}.bin")
    if not cache.exists() or cache.stat().st_mtime < path.stat().st_mtime:
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        if args.lines:
            lines = lines[:args.lines]
        started = time.monotonic()
        save(cache.with_suffix(".tmp"), make_records(lines, config, args.partitions))
        cache.with_suffix(".tmp").rename(cache)
        print(f"ledger records made in {time.monotonic() - started:.0f} s: {cache}")
        del lines
    records = load(cache)
    entries = sum(len(orjson.loads(v)) for items in records.values() for _, v in items)
    count = sum(map(len, records.values()))
    size = sum(len(v) for items in records.values() for _, v in items)
    print(f"{entries} ledger entries in {count} records ({size / 2**20:.0f} MiB), "
          f"{args.partitions} partitions")
    events_file = path
    if args.lines:
        events_file = cache.with_suffix(".jsonl")
        if not events_file.exists():
            with open(path, "rb") as src:
                events_file.write_bytes(b"".join(line for _, line in zip(range(args.lines), src)))

    if args.baseline:
        return compare(Path(args.baseline).resolve(), cache, args, entries)

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        rebuild(records, config)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0

    best_rebuild = best_report = float("inf")
    shards: list[Shard] = []
    for _ in range(args.rounds):
        shards = []
        gc.collect()
        seconds, shards = cpu(lambda: rebuild(records, config))
        best_rebuild = min(best_rebuild, seconds)
        gc.unfreeze()
        gc.collect()
        seconds, replay = cpu(lambda: replay_file(events_file, config))
        best_report = min(best_report, seconds)
        gc.unfreeze()
    at = parse_instant(AS_OF)
    counts = {"duplicate": sum(s.duplicates for s in shards),
              "invalid": sum(sum(s.invalid.values()) for s in shards)}
    live = build_report([s.core for s in shards], at, config, counts)
    expected = build_report([replay.core], at, config, counts)
    live["events"].pop("read", None)
    expected["events"].pop("read", None)
    if live != expected:
        print("the rebuilt shards do NOT give the report's numbers", file=sys.stderr)
        return 1
    print(f"rebuild {best_rebuild:.2f} CPU s ({entries / best_rebuild:,.0f} entries/s); "
          f"replay_file {best_report:.2f} CPU s ({replay.read / best_report:,.0f} events/s); "
          f"rebuild / replay {best_rebuild / best_report:.2f}; best of {args.rounds}; "
          "the rebuilt shards give the report's numbers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
