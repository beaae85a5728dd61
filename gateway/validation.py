"""Every event the gateway produces passes the engine's own decoder first.

Why: the gateway must never put an invalid contract event on the input topic; with the
decoder as the gate, what the gateway accepts is exactly what the engine counts. With stages
configured (SPEC §7.1) the decoder also checks that a mapped stage is one of them.
"""

from __future__ import annotations

import inspect
from typing import Any

import orjson

from engine.config import Config
from engine.decode import decode
from engine.event import Rejection

_DECODE_TAKES_STAGES = "stages" in inspect.signature(decode).parameters


def configured_stages(config: Config) -> frozenset[str] | None:
    """The ids of ``[[pipeline.stages]]``, or ``None`` without a pipeline (SPEC v1 engines)."""
    pipeline = getattr(config, "pipeline", None)
    stages = getattr(pipeline, "stages", None) if pipeline is not None else None
    if not stages:
        return None
    return frozenset(stage.id for stage in stages)


class EventGate:
    """``gate(event_dict)`` -> the bytes to produce, or the decoder's :class:`Rejection`."""

    def __init__(self, config: Config) -> None:
        self.currency = config.money.currency
        self.max_event_bytes = config.limits.max_event_bytes
        self.stages = configured_stages(config)

    def check_bytes(self, raw: bytes) -> Rejection | None:
        kwargs: dict[str, Any] = {}
        if _DECODE_TAKES_STAGES:
            kwargs["stages"] = self.stages
        result = decode(raw, currency=self.currency, max_event_bytes=self.max_event_bytes,
                        **kwargs)
        return result if isinstance(result, Rejection) else None

    def __call__(self, event: dict[str, Any]) -> bytes | Rejection:
        raw = orjson.dumps({k: v for k, v in event.items() if v is not None})
        rejection = self.check_bytes(raw)
        return raw if rejection is None else rejection
