"""Fast failover: a worker restarted after ``kill -9`` serves again in seconds (opt-in).

Before static membership (``streams/membership.py``) the restarted worker joined its groups as
a new member, and the rebalance waited for the dead one's session to time out: the restart
answered completely only after ~60 s. Measured here, on the real broker and worker; the figure
goes to docs/reliability.md. Opt-in (``-m fault``): it takes a minute before the fix.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime, timezone

import orjson
import pytest

from test_ingest_e2e import all_accounted, key_of, produce, valid_events
from test_ingest_e2e import worker_setup  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

#: What the test demands; the measured time is printed for docs/reliability.md.
SERVED_AGAIN_WITHIN_SECONDS = 25.0


def test_a_worker_restarted_after_kill_9_serves_again_in_seconds(worker_setup) -> None:
    s = worker_setup
    events = valid_events(500, datetime.now(timezone.utc), prefix=s["app_id"])
    worker = s["new_worker"]("first")
    worker.wait_ready()
    produce(s["bootstrap"], s["input"], [(key_of(e), orjson.dumps(e)) for e in events])
    worker.wait_until(all_accounted(worker, len(events)), "every event to be accounted for")
    time.sleep(2)  # offsets committed
    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL

    started = time.monotonic()
    worker = s["new_worker"]("second")
    worker.wait_until(lambda: worker.events().get("counted") == len(events),
                      "the restarted worker to serve every event")
    served = time.monotonic() - started
    # and new input is taken at once, by both stages
    more = valid_events(20, datetime.now(timezone.utc), prefix=s["app_id"] + "-more")
    produce(s["bootstrap"], s["input"], [(key_of(e), orjson.dumps(e)) for e in more])
    worker.wait_until(lambda: worker.events().get("counted") == len(events) + len(more),
                      "new input to be counted")
    taken = time.monotonic() - started
    print(f"\nrestart after kill -9: served again after {served:.1f} s, new input counted "
          f"after {taken:.1f} s")
    assert served < SERVED_AGAIN_WITHIN_SECONDS
    assert worker.stop(signal.SIGTERM) == 0
