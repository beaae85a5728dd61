"""Calendar windows in the configured time zone: days, weeks, months, fiscal quarters and years.

Why our own calendar instead of Faust's windows: KPI windows are local calendar periods (a local
day lasts 23 or 25 hours across a daylight-saving change, months differ in length, quarters and
years follow the fiscal year), while Faust's windows are fixed UTC-epoch sizes.

Instants are integer microseconds since the Unix epoch; dates are proleptic ordinals
(``date.toordinal()``). Every window is a whole number of local days, so the core buckets flows
by local date and a window is a range of dates (SPEC §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Final
from zoneinfo import ZoneInfo

from engine.config import CalendarConfig
from engine.event import MICRO

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SLOT_US: Final = 900 * MICRO  # every modern UTC offset and transition is a multiple of 15 minutes

REPORT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("day", 0), ("day", 1),
    ("week", 0), ("week", 1),
    ("month", 0), ("month", 1), ("month", 12),
    ("quarter", 0), ("quarter", 1), ("quarter", 4),
    ("year", 0), ("year", 1),
)


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open local-calendar window ``[start, end)``; ``first_day``..``end_day`` are ordinals."""

    period: str
    offset: int
    first_day: int
    end_day: int
    start: int  # µs
    end: int  # µs


def to_micros(dt: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch, exactly."""
    return (dt - _EPOCH) // timedelta(microseconds=1)


def from_micros(us: int, zone: ZoneInfo | timezone = timezone.utc) -> datetime:
    return (_EPOCH + timedelta(microseconds=us)).astimezone(zone)


class Calendar:
    """Local dates and window boundaries for one :class:`CalendarConfig`.

    Local-date lookups are memoised per 15-minute UTC slot (a date boundary always falls on a
    slot boundary), which turns a time-zone conversion per event into a dict lookup.
    """

    def __init__(self, config: CalendarConfig) -> None:
        self.config = config
        self.zone = ZoneInfo(config.timezone)
        self.week_start = config.week_start_weekday
        self.fiscal_start = config.fiscal_year_start_month
        self.slot_day: dict[int, int] = {}
        self._midnight: dict[int, int] = {}

    # -- instants and dates -------------------------------------------------------------------

    def local_day(self, us: int) -> int:
        """The local calendar date (ordinal) of an instant."""
        slot = us // SLOT_US
        day = self.slot_day.get(slot)
        if day is None:
            first = self._exact_local_day(slot * SLOT_US)
            last = self._exact_local_day(slot * SLOT_US + SLOT_US - 1)
            if first != last:  # an exotic zone whose boundary is not on a slot: no memo
                return self._exact_local_day(us)
            self.slot_day[slot] = day = first
        return day

    def _exact_local_day(self, us: int) -> int:
        return from_micros(us, self.zone).date().toordinal()

    def midnight(self, day: int) -> int:
        """The first instant of a local date (SPEC §6.12: in a DST gap, the first instant)."""
        us = self._midnight.get(day)
        if us is None:
            us = self._midnight[day] = self._first_instant(day)
        return us

    def _first_instant(self, day: int) -> int:
        d = date.fromordinal(day)
        naive = datetime(d.year, d.month, d.day)
        guesses = [to_micros(naive.replace(tzinfo=self.zone, fold=f)) for f in (0, 1)]
        lo = min(guesses) - 2 * 86_400 * MICRO
        hi = max(guesses) + 2 * 86_400 * MICRO
        # local_day is non-decreasing in the instant: bisect on whole seconds, then refine.
        lo_s, hi_s = lo // MICRO, hi // MICRO
        while lo_s < hi_s:
            mid = (lo_s + hi_s) // 2
            if self._exact_local_day(mid * MICRO) >= day:
                hi_s = mid
            else:
                lo_s = mid + 1
        return lo_s * MICRO

    def format_instant(self, us: int) -> str:
        """Local time with its offset, as the report writes window bounds."""
        return from_micros(us, self.zone).isoformat()

    # -- periods ------------------------------------------------------------------------------

    def period_start_day(self, period: str, day: int) -> int:
        """The first date of the ``period`` containing ``day``."""
        if period == "day":
            return day
        d = date.fromordinal(day)
        if period == "week":
            return day - (d.weekday() - self.week_start) % 7
        if period == "month":
            return d.replace(day=1).toordinal()
        if period == "quarter" or period == "year":
            months_into_year = (d.month - self.fiscal_start) % 12
            back = months_into_year if period == "year" else months_into_year % 3
            return _add_months(d.replace(day=1), -back).toordinal()
        raise ValueError(f"unknown period {period!r}")

    def shift_day(self, period: str, start_day: int, k: int) -> int:
        """The first date of the period ``k`` periods after the one starting at ``start_day``."""
        if period == "day":
            return start_day + k
        if period == "week":
            return start_day + 7 * k
        months = {"month": 1, "quarter": 3, "year": 12}[period]
        return _add_months(date.fromordinal(start_day), months * k).toordinal()

    def window(self, period: str, offset: int, as_of: int) -> Window:
        """The window ``offset`` periods before the one containing ``as_of``."""
        current = self.period_start_day(period, self.local_day(as_of))
        first = self.shift_day(period, current, -offset)
        end = self.shift_day(period, first, 1)
        return Window(period, offset, first, end, self.midnight(first), self.midnight(end))

    def report_windows(self, as_of: int) -> list[Window]:
        return [self.window(p, k, as_of) for p, k in REPORT_WINDOWS]


def _add_months(d: date, months: int) -> date:
    """``d`` (a first of month) moved by whole months."""
    index = d.year * 12 + (d.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)
