"""Logging a failure without the data that caused it.

Why: events carry personal data (rep and customer ids, amounts), and an exception's text often
quotes its input (``KeyError: 'jane.doe@…'``). The worker's log goes to places the events do
not (terminals, log shippers), so failures on the data path are logged by exception type and
code location only; the event itself, with the full reason, is in the dead-letter topic.
"""

from __future__ import annotations

import traceback
from pathlib import Path

FRAMES = 3


def exception_summary(exc: BaseException) -> str:
    """``TypeError at ledger.py:310 (take_bundle) < …``: the type and the innermost frames."""
    frames = traceback.extract_tb(exc.__traceback__)[-FRAMES:]
    where = " < ".join(f"{Path(f.filename).name}:{f.lineno} ({f.name})"
                       for f in reversed(frames))
    return f"{type(exc).__name__} at {where}" if where else type(exc).__name__
