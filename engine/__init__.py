"""Streaming sales-KPI engine: CRM events in, exact KPIs out."""

__version__ = "0.1.0"
