"""Panel factories with one look and feel, over the ``kpi-prometheus`` data source.

Why factories: every dashboard shows the same kinds of things (a big number, a ranking, a
trend, a table joined by team or rep); one function per kind keeps units, reductions,
thresholds and data source references identical everywhere, and the dashboard modules short.
Panel positions come from the SDK's flow layout (width ``w`` of 24 columns, height ``h``).
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    gauge,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BarGaugeValueMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    FieldTextAlignment,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from grafana.promql import named

DATASOURCE_UID = "kpi-prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
NO_VALUE = "–"

# Threshold colours: attainment (share of a target) and signed growth.
ATTAINMENT = [(None, "red"), (0.7, "orange"), (1.0, "green")]
GROWTH = [(None, "red"), (0.0, "green")]
# Pace (SPEC §7.5: the KPI over where the target should be by now): behind below 1.
PACE = [(None, "red"), (0.9, "orange"), (1.0, "green")]
# Pipeline coverage (due pipeline over what is left to the target): 3x is the usual rule.
COVERAGE = [(None, "red"), (1.0, "orange"), (3.0, "green")]
NEUTRAL = [(None, "blue")]


class Q:
    """One query of a panel: PromQL expression and legend (``{{label}}`` templates)."""

    def __init__(self, expr: str, legend: str) -> None:
        self.expr = expr
        self.legend = legend


def _targets(queries: Sequence[Q], *, instant: bool, as_table: bool = False
             ) -> list[prometheus.Dataquery]:
    out = []
    for i, q in enumerate(queries):
        target = (prometheus.Dataquery().datasource(DATASOURCE).expr(q.expr)
                  .legend_format(q.legend).ref_id(chr(ord("A") + i)))
        target = target.instant() if instant else target.range()
        if as_table:
            target = target.format(PromQueryFormat.TABLE)
        out.append(target)
    return out


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dash.ThresholdsConfig:
    return (dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=v, color=c) for v, c in steps]))


def _last() -> common.ReduceDataOptions:
    return common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def big_number(title: str, description: str, queries: Sequence[Q], *, unit: str, w: int,
               h: int = 5, decimals: int | None = None,
               thresholds: Sequence[tuple[float | None, str]] = NEUTRAL,
               no_value: str = NO_VALUE) -> stat.Panel:
    """A stat panel of instant values: the current number of one or a few series."""
    panel = (stat.Panel().title(title).description(description).datasource(DATASOURCE)
             .targets(_targets(queries, instant=True)).unit(unit).span(w).height(h)
             .reduce_options(_last()).graph_mode(BigValueGraphMode.NONE)
             .color_mode(BigValueColorMode.VALUE)
             .text_mode(BigValueTextMode.AUTO if len(queries) == 1
                        else BigValueTextMode.VALUE_AND_NAME)
             .thresholds(_thresholds(thresholds)).no_value(no_value))
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def progress(title: str, description: str, queries: Sequence[Q], *, w: int, h: int = 5,
             maximum: float = 1.2) -> gauge.Panel:
    """A gauge of attainment (a share of a target, 1 = 100 %)."""
    return (gauge.Panel().title(title).description(description).datasource(DATASOURCE)
            .targets(_targets(queries, instant=True)).unit("percentunit").min(0).max(maximum)
            .span(w).height(h).reduce_options(_last()).show_threshold_markers(True)
            .thresholds(_thresholds(ATTAINMENT)).no_value(NO_VALUE))


def ranking(title: str, description: str, queries: Sequence[Q], *, unit: str, w: int,
            h: int = 8, thresholds: Sequence[tuple[float | None, str]] = NEUTRAL,
            minimum: float | None = 0, maximum: float | None = None,
            display: BarGaugeDisplayMode = BarGaugeDisplayMode.GRADIENT) -> bargauge.Panel:
    """Horizontal bars, one per series (team, rep, window…), in query result order."""
    panel = (bargauge.Panel().title(title).description(description).datasource(DATASOURCE)
             .targets(_targets(queries, instant=True)).unit(unit).span(w).height(h)
             .orientation(VizOrientation.HORIZONTAL).display_mode(display)
             .value_mode(BarGaugeValueMode.COLOR).show_unfilled(True)
             .reduce_options(_last()).thresholds(_thresholds(thresholds))
             .no_value(NO_VALUE))
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    return panel


def trend(title: str, description: str, queries: Sequence[Q], *, unit: str, w: int,
          h: int = 8, stacked: bool = False, time_from: str | None = None,
          decimals: int | None = None) -> timeseries.Panel:
    """A time series of range queries (how a window's value built up)."""
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .targets(_targets(queries, instant=False)).unit(unit).span(w).height(h)
             .line_width(2).fill_opacity(10 if not stacked else 40)
             .legend(common.VizLegendOptions().show_legend(True)
                     .display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM))
             .no_value(NO_VALUE))
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    if time_from is not None:
        panel = panel.time_from(time_from)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def joined_table(title: str, description: str, key: str,
                 columns: Sequence[tuple[str, str, str]], *, w: int, h: int = 9,
                 sort_by: str | None = None, names: bool = False) -> table.Panel:
    """One row per ``key`` label value, one column per query: ``(header, expr, unit)``.

    Instant queries in table format, merged on their shared labels; the bookkeeping columns
    (``Time``, ``period``, ``offset``, ``scope``, ``kpi``, ``stage``…) are hidden. With
    ``names`` (``key`` is ``rep`` or ``team``) every query gets the roster's display name
    (:func:`grafana.promql.named`) and the first column shows it instead of the id.
    """
    queries = [Q(named(expr, key) if names else expr, header) for header, expr, _ in columns]
    refs = [chr(ord("A") + i) for i in range(len(columns))]
    rename = {f"Value #{ref}": header for ref, (header, _, _) in zip(refs, columns, strict=True)}
    shown = f"{key}_name" if names else key
    if names:
        rename[shown] = key
    order = {shown: 0} | {header: i + 1 for i, (header, _, _) in enumerate(columns)}
    hidden = {name: True for name in ("Time", "period", "offset", "scope", "kpi", "team", "rep",
                                      "stage", "category", "team_name", "rep_name")
              if name != shown}
    panel = (_table().title(title).description(description).datasource(DATASOURCE)
             .targets(_targets(queries, instant=True, as_table=True)).span(w).height(h)
             .with_transformation(DataTransformerConfig(id_val="merge", options={}))
             .with_transformation(DataTransformerConfig(id_val="organize", options={
                 "excludeByName": hidden, "renameByName": rename, "indexByName": order}))
             .no_value(NO_VALUE))
    for header, _, unit in columns:
        panel = panel.override_by_name(header, [DynamicConfigValue(id_val="unit", value=unit)])
    if sort_by is not None:
        panel = panel.sort_by([common.TableSortByFieldState().display_name(sort_by).desc(True)])
    return panel


def matrix_table(title: str, description: str, expr: str, *, rows: str, columns: str, w: int,
                 h: int = 9, names: bool = False) -> table.Panel:
    """One instant query pivoted: one row per ``rows`` label, one column per ``columns`` label.

    With ``names`` (``rows`` is ``rep`` or ``team``) the rows are the roster's display names.
    """
    if names:
        expr, rows = named(expr, rows), f"{rows}_name"
    return (_table().title(title).description(description).datasource(DATASOURCE)
            .targets(_targets([Q(expr, f"{{{{{columns}}}}}")], instant=True, as_table=True))
            .span(w).height(h)
            .with_transformation(DataTransformerConfig(id_val="groupingToMatrix", options={
                "rowField": rows, "columnField": columns, "valueField": "Value",
                "emptyValue": "zero"}))
            .no_value(NO_VALUE))


def _table() -> table.Panel:
    # The field defaults Grafana (and the SDK's decoder) fill in, written out so that the
    # committed JSON is exactly what the SDK model decodes and encodes again.
    return table.Panel().align(FieldTextAlignment.AUTO).inspect(False)


def row(title: str) -> dash.Row:
    return dash.Row(title)


def series_table(title: str, description: str, expr: str, *, show: Sequence[str],
                 value_header: str, unit: str, w: int, h: int = 8) -> table.Panel:
    """One instant query as a table: the ``show`` labels as columns, then the value."""
    order = {name: i for i, name in enumerate([*show, value_header])}
    return (_table().title(title).description(description).datasource(DATASOURCE)
            .targets(_targets([Q(expr, value_header)], instant=True, as_table=True))
            .span(w).height(h)
            .with_transformation(DataTransformerConfig(id_val="filterFieldsByName", options={
                "include": {"names": [*show, "Value"]}}))
            .with_transformation(DataTransformerConfig(id_val="organize", options={
                "excludeByName": {}, "renameByName": {"Value": value_header},
                "indexByName": order}))
            .override_by_name(value_header, [DynamicConfigValue(id_val="unit", value=unit)])
            .no_value(NO_VALUE))
