"""Generated live traffic, decoded: the events of the benchmarks that fill one day.

Why one place: the live-report and answer benchmarks both need "``count`` live v2 events at
``rate`` per second, stamped as they would arrive, all in the past", valid ones only, exactly
as the worker's decoder would pass them.
"""

from __future__ import annotations

import itertools
import time

from engine.config import Config
from engine.decode import decode
from engine.event import Event, Rejection
from engine.tooling.generator import live_lines, settings_for


def live_events(config: Config, count: int, rate: float, seed: int = 7) -> list[Event]:
    """The valid events among ``count`` generated live lines (``rate``/s, ending a minute
    ago, so that the whole run lies in the past)."""
    settings = settings_for(config, seed=seed)
    now = time.time() - count / rate - 60
    stages = config.pipeline.stage_ids or None
    events = []
    for _, raw in itertools.islice(live_lines(settings, rate, now=now), count):
        event = decode(raw, currency=config.money.currency,
                       max_event_bytes=config.limits.max_event_bytes, stages=stages)
        if not isinstance(event, Rejection):
            events.append(event)
    return events
