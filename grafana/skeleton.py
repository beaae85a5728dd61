"""What every KPI dashboard shares: identity, clock settings, links, template variables.

Why fixed uids: links, the kiosk URL and ``kpi-engine grafana push`` address a dashboard by its
uid, so it must never change between builds. The clock settings come from the engine's
configuration (:class:`~grafana.settings.DashboardSettings`) so that trend axes and "today"
agree with the engine's windows.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    DashboardLinkType,
    RowPanel,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from grafana.panels import DATASOURCE
from grafana.promql import name_option_regex, name_options
from grafana.settings import DashboardSettings

TAG = "sales-kpis"
REFRESH_INTERVALS = ["30s", "1m", "5m", "15m", "1h"]


def new_dashboard(uid: str, title: str, description: str, settings: DashboardSettings, *,
                  refresh: str = "1m", time_from: str = "now-7d",
                  extra_tags: Sequence[str] = ()) -> dash.Dashboard:
    """A dashboard with the engine's clock settings and links to its sibling dashboards."""
    return (
        dash.Dashboard(title).uid(uid).description(description)
        .tags([TAG, *extra_tags]).editable()
        .timezone(settings.timezone).week_start(settings.week_start)
        .fiscal_year_start_month(settings.fiscal_year_start_month)
        .time(time_from, "now").refresh(refresh)
        .timepicker(dash.TimePicker().refresh_intervals(REFRESH_INTERVALS))
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .link(dash.DashboardLink("Sales KPI dashboards").type(DashboardLinkType.DASHBOARDS)
              .tags([TAG]).as_dropdown(True).include_vars(False).keep_time(True))
    )


def period_variable(default: str = "month",
                    choices: Sequence[str] = ("day", "week", "month", "quarter", "year"),
                    ) -> dash.CustomVariable:
    """``$period``: which engine window the KPI panels show (always its offset 0 or 1…)."""
    options = [VariableOption(selected=c == default, text=c, value=c) for c in choices]
    return (dash.CustomVariable("period").label("Period")
            .description("The engine's calendar window (label period) the KPI panels show.")
            .values(",".join(choices)).options(options)
            .current(VariableOption(selected=True, text=default, value=default)))


def label_variable(name: str, label: str, description: str, query: str, *, multi: bool,
                   all_value: str | None = None) -> dash.QueryVariable:
    """A Prometheus query variable (``label_values(...)`` or ``query_result(...)``), refreshed
    when the dashboard loads, sorted naturally by the text it shows."""
    variable = (dash.QueryVariable(name).label(label).description(description)
                .datasource(DATASOURCE).query(query).refresh(VariableRefresh.ON_DASHBOARD_LOAD)
                .sort(VariableSort.NATURAL_ASC).multi(multi).include_all(multi))
    if all_value is not None:
        variable = variable.all_value(all_value)
    return variable


def name_variable(name: str, label: str, description: str, key: str, expr: str, *, multi: bool,
                  all_value: str | None = None) -> dash.QueryVariable:
    """A dropdown of the ``key`` ids (``rep`` or ``team``) of ``expr``, showing display names.

    Each option's text is the roster's name and its value the id the panels filter on
    (``query_result`` of :func:`~grafana.promql.name_options`, read by the regex of
    :func:`~grafana.promql.name_option_regex`); an id the roster does not list is offered
    under the id itself. Sorted by name.
    """
    variable = label_variable(name, label, description, f"query_result({name_options(expr, key)})",
                              multi=multi, all_value=all_value)
    return variable.regex(name_option_regex(key))


def finish(builder: dash.Dashboard) -> Dashboard:
    """Build and number the panels 1, 2, … in layout order, so ids never change between builds."""
    model = builder.build()
    next_id = 1
    for panel in model.panels or []:
        panel.id_val = next_id
        next_id += 1
        if isinstance(panel, RowPanel):
            for inner in panel.panels:
                inner.id_val = next_id
                next_id += 1
    return model
