"""Standby changelog records Faust has fetched are not thrown away when its flow resumes.

Why: Faust buffers the changelog records it fetches in one queue (``app.tables.
changelog_queue``), which its recovery drains into the tables. That queue is cleared whenever
``app.flow_control.resume()`` is called (faust-streaming 0.15, ``clear_on_resume=True``), and
the recovery calls it twice per rebalance: once when it starts reading, and once more at the
end of ``Recovery.on_recovery_completed``, *after* the standby partitions were resumed and the
tables' ``on_recovery_completed`` hooks ran. Standby records fetched in between and not yet
drained are dropped, while the consumer's position has moved past them; Faust seeks standby
partitions only when the next recovery starts, so nothing reads them again. A replica then
stays behind its changelog (:meth:`streams.replicas.Replicas.current`), *missing*, until the
owner happens to write again; at the end of a stream, for good. Seen after a zombie (a worker
paused past its session) rejoined: its hook rebuilt two stale partitions, the window was long
enough, and a standby partition stayed missing for minutes
(``tests/test_cluster_faults.py``, 1 run in 3).

The fix keeps the queued records of the current standby partitions when the flow resumes.
That is safe: a changelog record at a given offset never changes, and the recovery applies a
record only when its offset is above the last one it applied for the partition (so a record
read again after a seek is skipped). Records of other partitions are still cleared, as Faust
intends (stale records of partitions no longer held, or active ones, whose reading the recovery
controls itself); and the explicit clear at the start of a rebalance is left alone.
"""

from __future__ import annotations

from typing import Any


def keep_standby_records_on_resume(app: Any) -> None:
    """Wrap ``app.flow_control.resume`` so that it keeps queued standby changelog records."""
    flow_control = app.flow_control
    resume = flow_control.resume

    def resume_keeping_standby_records() -> None:
        queue = app.tables.changelog_queue
        standbys = app.tables.recovery.standby_tps
        kept = [event for event in queue._queue if event.message.tp in standbys]
        resume()
        # clear() emptied the deque without touching the queue's task counters, so putting
        # the same items back leaves them consistent; nobody waits on a queue that had items
        queue._queue.extend(kept)

    flow_control.resume = resume_keeping_standby_records
