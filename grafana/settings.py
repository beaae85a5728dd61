"""What the dashboards take from the engine's configuration.

Why only these: KPI panels select their window by the ``period``/``offset`` labels the engine
computed in its own time zone, so the numbers never depend on Grafana's clock. The dashboard
time zone, week start and fiscal year only shape the axes of the trend panels and the time
picker; they are set to the engine's so that "today" means the same day on both. The currency
picks the unit of money panels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from grafana_foundation_sdk.models import units

from engine.config import Config

# Grafana's built-in currency units (``currencyEUR``…), as the SDK lists them; any other
# ISO code is shown as a suffix.
_CURRENCY_UNITS = {
    value.removeprefix("currency"): value
    for value in vars(units).values()
    if isinstance(value, str) and re.fullmatch(r"currency[A-Z]{3}", value)
}


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Dashboard-wide settings; the defaults are the engine's built-in configuration."""

    timezone: str = "utc"
    week_start: str = "monday"
    fiscal_year_start_month: int = 0  # Grafana counts months from 0 (January)
    currency: str = "USD"

    @classmethod
    def from_config(cls, config: Config) -> DashboardSettings:
        zone = config.calendar.timezone
        return cls(
            timezone="utc" if zone in ("UTC", "Etc/UTC") else zone,
            week_start=config.calendar.week_start,
            fiscal_year_start_month=config.calendar.fiscal_year_start_month - 1,
            currency=config.money.currency,
        )

    @property
    def money_unit(self) -> str:
        return _CURRENCY_UNITS.get(self.currency, f"suffix: {self.currency}")
