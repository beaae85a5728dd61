"""Standby changelog records Faust fetched survive the flow resuming (streams.standby_flow).

Faust clears its changelog queue whenever its flow resumes, including at the end of each
recovery, after the standby partitions were resumed and the tables' hooks ran: records of a
standby partition fetched meanwhile were lost, the consumer's position past them, and the
replica stayed behind its changelog (missing) until the owner wrote again. Seen after a zombie
worker rejoined (tests/test_cluster_faults.py, 1 run in 3). Here the real worker's Faust app,
its real changelog queue and flow control, and the real recovery's standby partitions.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from engine.config import config_from_mapping
from streams.topics import LEDGER_TABLE, changelog_topic_name
from streams.worker import build_worker


def _event(tp: TP, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, partition=tp.partition,
                                                   offset=offset))


def test_queued_standby_records_survive_the_flow_resuming(tmp_path) -> None:
    config = config_from_mapping({"worker": {"data_dir": str(tmp_path / "data"),
                                             "store": "memory://"}})
    worker = build_worker(config, ingest_in_process=True)
    app = worker.app
    topic = changelog_topic_name(config, LEDGER_TABLE)
    standby, active, gone = TP(topic, 0), TP(topic, 1), TP(topic, 2)

    async def run() -> list[tuple[int, int]]:
        queue = app.tables.changelog_queue
        app.tables.recovery.standby_tps.clear()
        app.tables.recovery.standby_tps.add(standby)
        for offset in range(3):  # fetched after the standby partitions were resumed
            for tp in (standby, active, gone):
                queue.put_nowait(_event(tp, offset))
        app.flow_control.resume()  # what Recovery.on_recovery_completed does at its end
        left = []
        while not queue.empty():
            event = queue.get_nowait()
            left.append((event.message.tp.partition, event.message.offset))
        return left

    # before: [] (every queued record cleared, the standby ones never read again)
    assert asyncio.run(run()) == [(0, 0), (0, 1), (0, 2)]
