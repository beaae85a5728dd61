"""The worker's one Faust agent: ``apply``, on the bundles topic.

Why only one, and why it is cheap: the ingest stage runs outside Faust's stream machinery
(:mod:`streams.ingest`), and what reaches this agent are bundles of a few thousand items each,
so Faust's per-message costs are paid a few dozen times a second instead of per event. The
agent takes whatever bundles are there (up to :data:`APPLY_BUNDLES`, waiting at most
:data:`APPLY_WITHIN_SECONDS` for more) and hands them to :class:`streams.apply.Apply`; Faust
acknowledges them when ``process`` returns, that is once their ledger records are durable.
"""

from __future__ import annotations

import faust

from streams.apply import Apply
from streams.topics import Topics

#: Bundles per round at most: a round costs one ledger write and one acknowledgement wait per
#: partition, and the agent waits for them before it takes the next round. Under a steady live
#: rate the ingest stage sends many small bundles (a few messages each at 2,000 events/s), so a
#: small cap made the acknowledgement waits the limit of the stage: 16 bundles a round left a
#: backlog growing in the soak (docs/benchmarks.md). A round takes only what is there within
#: :data:`APPLY_WITHIN_SECONDS`, so the cap matters only when the stage is behind, which is when
#: bigger rounds are wanted; :func:`streams.apply.size_groups` still keeps each ledger record
#: below the broker's message limit, and the loop is released between those groups.
APPLY_BUNDLES = 256
#: Longest wait for a round to fill: the latency it adds at low rates.
APPLY_WITHIN_SECONDS = 0.005


def register_agents(app: faust.App, topics: Topics, apply: Apply) -> None:
    """Attach the apply agent to ``app``."""

    @app.agent(topics.bundles, name="apply")
    async def apply_agent(stream: faust.StreamT) -> None:
        async for bundles in stream.take_events(APPLY_BUNDLES, within=APPLY_WITHIN_SECONDS):
            await apply.process(bundles)
