"""Streaming sales-KPI engine: CRM events in, exact KPIs out."""

from engine import native as _native

__version__ = "0.1.0"

# Load the compiled build of the hot path when it is current (engine/native.py says why).
_native.activate()
