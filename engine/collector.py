"""The Prometheus export: KPI components computed from live state at scrape time.

Why a custom collector and not global gauges: a worker's partitions move between workers, and
windows move with the wall clock (day offset 0 rolls over at local midnight with no event). A
gauge set when an event arrives would go stale on both counts; ``collect()`` instead asks the
cores the worker holds *now* for the components at ``as_of = clock()``.

Why components and not KPIs: each worker exports only the additive parts of its own partitions
(:mod:`engine.components`); ``sum()`` across workers is then the whole, and the recording rules
in ``prometheus/rules/kpi_recording.yml`` derive every ratio from the summed parts, exactly as
:mod:`engine.kpis` does. Component ``N`` is the gauge ``kpi_N``; money is converted from
micro-units to currency units and durations from microseconds to seconds, so every number is in
a base unit (the currency is the ``currency`` label of ``kpi_info``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from engine.calendar import REPORT_WINDOWS, Calendar
from engine.components import UNITS, components
from engine.config import Config, Target
from engine.core import Core
from engine.event import MICRO
from engine.timestamps import now_micros

PREFIX = "kpi_"

# Divisor turning a component's integer into the exported float, per unit of engine.components.
UNIT_DIVISORS: dict[str, int] = {"count": 1, "micros": MICRO, "us": MICRO}

HELP: dict[str, str] = {
    "leads_created": "Leads whose earliest lead.created falls in the window.",
    "leads_qualified": "Leads whose earliest lead.qualified falls in the window.",
    "deals_created": "Deals whose earliest deal.created falls in the window.",
    "deals_won": "Deals whose latest close is won and falls in the window.",
    "deals_lost": "Deals whose latest close is lost and falls in the window.",
    "revenue_won": "Sum of won amounts closed in the window, in the reporting currency.",
    "sales_cycle_seconds_sum": "Sum of the cycle lengths of won closes with a known cycle, "
                               "in seconds.",
    "sales_cycles_known": "Won closes in the window with a known cycle length.",
    "activities": "Activities logged in the window, by activity_type.",
    "new_customers": "Customers acquired in the window (company scope).",
    "mrr_new": "MRR of subscriptions started in the window, in the reporting currency.",
    "spend": "Spend recorded in the window, by category, in the reporting currency.",
    "customers_active_start": "Customers active at the window start.",
    "customers_active_end": "Customers active at the effective window end, min(end, as_of).",
    "customers_churned": "Customers active at the start and not at the effective end.",
    "customers_retained": "Customers active at the start and at the effective end.",
    "mrr_start": "MRR of subscriptions active at the window start, in the reporting currency.",
    "mrr_end": "MRR of subscriptions active at the effective end, in the reporting currency.",
    "mrr_churned": "MRR of subscriptions active at the start and not at the effective end, "
                   "in the reporting currency.",
    "rep_contributions": "Rep-activating contributions per (team, rep) in the window; a rep is "
                         "active when the sum over workers is > 0.",
    "revenue_won_growth_base": "Revenue won in the revenue_growth comparison window (offset 0: "
                               "previous window to date; offset 1: the offset-2 window), "
                               "in the reporting currency.",
    "revenue_won_yoy_base": "Revenue won in the same window one year earlier, to date, "
                            "in the reporting currency.",
    "pipeline_open_deals": "Deals open at the effective window end (offset-0 windows: now), "
                           "by stage (\"\": no stage), for their team and rep at that instant.",
    "pipeline_open_amount": "Amount of the deals open at the effective window end, by stage, "
                            "in the reporting currency (a null amount counts 0).",
    "pipeline_due_amount": "Amount of the open deals whose expected close falls in the window, "
                           "by stage, in the reporting currency.",
    "stage_entries": "Entries of deals into each pipeline stage in the window.",
    "stage_stay_seconds_sum": "Summed length of the stays in each stage that ended in the "
                              "window, in seconds.",
    "stage_stays": "Stays in each stage that ended in the window.",
}


class KpiCollector(Collector):
    """Gauges of the KPI components of ``cores_provider()`` at ``as_of = clock()`` (µs).

    ``cores_provider`` returns the cores this process holds at the moment of the scrape (a
    worker's assigned partitions, or one core for a file). Pass ``registry`` to register the
    collector on it; nothing is ever registered on the global default registry implicitly.
    """

    def __init__(self, cores_provider: Callable[[], list[Core]], calendar: Calendar,
                 config: Config, clock: Callable[[], int] = now_micros,
                 registry: CollectorRegistry | None = None) -> None:
        self.cores_provider = cores_provider
        self.calendar = calendar
        self.config = config
        self.clock = clock
        self.targets = latest_targets(config.targets)
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterator[Metric]:
        """The metric names, for the registry's duplicate check; no state is read."""
        for name in UNITS:
            yield GaugeMetricFamily(PREFIX + name, _help(name))
        for family in _static_families(self.config, self.targets):
            yield family
        yield GaugeMetricFamily("kpi_as_of_timestamp_seconds", _AS_OF_HELP)
        yield GaugeMetricFamily("kpi_window_start_timestamp_seconds", _START_HELP)
        yield GaugeMetricFamily("kpi_window_end_timestamp_seconds", _END_HELP)
        yield GaugeMetricFamily("kpi_collect_duration_seconds", _DURATION_HELP)

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        as_of = self.clock()
        cores = self.cores_provider()
        families = components_to_families(components(cores, self.calendar, as_of))
        yield from families.values()
        yield from self._other_families(as_of, started)

    def exposition(self) -> bytes:
        """The Prometheus text of everything :meth:`collect` yields, written directly.

        Why: with the pipeline a worker exports some 30,000 component samples, and building
        ``prometheus_client`` sample objects and formatting them one by one costs most of a
        scrape (~0.65 s over two years of state, against ~0.05 s here). The text is the same
        exposition format; ``tests/test_collector.py`` holds it to ``generate_latest``'s.
        """
        started = time.perf_counter()
        as_of = self.clock()
        comps = components(self.cores_provider(), self.calendar, as_of)
        head = components_text(comps)
        registry = CollectorRegistry()
        registry.register(_Families(lambda: self._other_families(as_of, started)))
        return head + generate_latest(registry)

    def _other_families(self, as_of: int, started: float) -> Iterator[Metric]:
        yield from _static_families(self.config, self.targets)
        yield GaugeMetricFamily("kpi_as_of_timestamp_seconds", _AS_OF_HELP, value=as_of / MICRO)
        starts = GaugeMetricFamily("kpi_window_start_timestamp_seconds", _START_HELP,
                                   labels=("period", "offset"))
        ends = GaugeMetricFamily("kpi_window_end_timestamp_seconds", _END_HELP,
                                 labels=("period", "offset"))
        for period, offset in REPORT_WINDOWS:
            w = self.calendar.window(period, offset, as_of)
            starts.add_metric((period, str(offset)), w.start / MICRO)
            ends.add_metric((period, str(offset)), w.end / MICRO)
        yield starts
        yield ends
        yield GaugeMetricFamily("kpi_collect_duration_seconds", _DURATION_HELP,
                                value=time.perf_counter() - started)


_AS_OF_HELP = "The instant (Unix seconds) the exported windows and components refer to."
_START_HELP = "Start of each reported window (Unix seconds), by period and offset."
_END_HELP = "End of each reported window (Unix seconds), by period and offset."
_DURATION_HELP = "Time this process took to compute the KPI components for this scrape."


class _Families(Collector):
    def __init__(self, families: Callable[[], Iterator[Metric]]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return self.families()


def components_text(comps: dict) -> bytes:
    """The exposition text of :func:`components_to_families`' gauges, in the same order:
    ``# HELP``/``# TYPE`` per family, then one line per sample, labels sorted by name as
    ``prometheus_client`` writes them. Label strings are made once
    per distinct label set (a few thousand, shared by all components of a scope)."""
    by_name: dict[str, list[str]] = {}
    label_text: dict[tuple, str] = {}
    for (name, labels), value in comps.items():
        lines = by_name.get(name)
        if lines is None:
            lines = by_name[name] = []
        text = label_text.get(labels)
        if text is None:
            text = label_text[labels] = "{" + ",".join(
                f'{k}="{_escape_label(v)}"' for k, v in sorted(labels)) + "}" if labels else ""
        divisor = UNIT_DIVISORS[UNITS[name]]
        lines.append(f"{PREFIX}{name}{text} "
                     f"{floatToGoString(value if divisor == 1 else value / divisor)}\n")
    out: list[str] = []
    for name, lines in by_name.items():
        out.append(f"# HELP {PREFIX}{name} {_escape_help(_help(name))}\n"
                   f"# TYPE {PREFIX}{name} gauge\n")
        out.extend(lines)
    return "".join(out).encode()


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def components_to_families(comps: dict) -> dict[str, GaugeMetricFamily]:
    """One gauge family ``kpi_<name>`` per component name, values converted to base units."""
    families: dict[str, GaugeMetricFamily] = {}
    label_names: dict[str, tuple[str, ...]] = {}
    for (name, labels), value in comps.items():
        family = families.get(name)
        keys = tuple(k for k, _ in labels)
        if family is None:
            family = families[name] = GaugeMetricFamily(PREFIX + name, _help(name), labels=keys)
            label_names[name] = keys
        elif keys != label_names[name]:
            raise ValueError(f"component {name} has inconsistent labels {keys}")
        divisor = UNIT_DIVISORS[UNITS[name]]
        family.add_metric(tuple(v for _, v in labels), value if divisor == 1 else value / divisor)
    return families


def latest_targets(targets: tuple[Target, ...]) -> dict[tuple, Target]:
    """SPEC §6.10: a later target for the same KPI, period and scope replaces an earlier one."""
    latest: dict[tuple, Target] = {}
    for t in targets:
        latest[(t.kpi, t.period, t.team, t.rep)] = t
    return latest


def _static_families(config: Config, targets: dict[tuple, Target]) -> Iterator[Metric]:
    info = GaugeMetricFamily("kpi_info", "Reporting time zone and currency of this engine.",
                             labels=("timezone", "currency"))
    info.add_metric((config.calendar.timezone, config.money.currency), 1)
    yield info
    yield GaugeMetricFamily("kpi_gross_margin", "Configured gross margin used by CLV (0..1].",
                            value=config.money.gross_margin)
    family = GaugeMetricFamily(
        "kpi_target", "Configured KPI target per period and scope, in the KPI's own unit.",
        labels=("kpi", "period", "scope", "team", "rep"))
    for t in targets.values():
        scope = "rep" if t.rep is not None else "team" if t.team is not None else "company"
        family.add_metric((t.kpi, t.period, scope, t.team or "", t.rep or ""), t.value)
    yield family
    stages = GaugeMetricFamily(
        "kpi_pipeline_stage_probability",
        "Configured pipeline stages: the chance to win from each (the value), its forecast "
        "category and its position in the pipeline; stage=\"\" stands for deals without a "
        "stage (probability 0, category pipeline).",
        labels=("stage", "category", "position"))
    for position, stage in enumerate(config.pipeline.stages, start=1):
        stages.add_metric((stage.id, stage.category, str(position)), stage.probability)
    stages.add_metric(("", "pipeline", "0"), 0.0)
    yield stages


def _help(name: str) -> str:
    return HELP.get(name, f"KPI component {name} ({UNITS.get(name, 'count')}).")
