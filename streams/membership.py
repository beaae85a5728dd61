"""Static group membership: a restarted worker takes its partitions back at once.

Why: when a worker dies without leaving its consumer groups (``kill -9``, a crash, a lost
host), its restart joins as a *new* member, and the group's rebalance waits for the old member,
which never answers, until its session times out: Faust's 60 s for the apply group. Measured
before: a worker restarted after ``kill -9`` answered completely only after ~60 s
(docs/reliability.md). With a ``group.instance.id`` (KIP-345), the restarted worker is the
*same* member: the coordinator hands it its partitions back without a rebalance.

The id must be stable across restarts and unique among the workers of one ``app_id``:
``[worker] instance_id``, or by default the host name and the web port (two workers on one host
cannot share a web port). With a random web port (0) there is nothing stable to derive, and
static membership is off, as with ``instance_id = "none"``.

The price, documented in docs/reliability.md: a static member does not leave its group when it
stops, so after a *clean* stop its partitions move to the other workers only once its session
times out (Faust's ``broker_session_timeout``); a worker that is restarted (the common case) is
back at once.
"""

from __future__ import annotations

import socket

from engine.config import Config


def instance_id(config: Config) -> str | None:
    """This worker's ``group.instance.id``, or ``None`` for dynamic membership."""
    configured = config.worker.instance_id.strip()
    if configured.lower() == "none":
        return None
    if configured:
        return configured
    if not config.worker.web_port:
        return None
    return f"{socket.gethostname()}:{config.worker.web_port}"
