"""One module per dashboard; each has ``UID`` and ``build(settings) -> Dashboard``."""

from grafana.dashboards_src import executive, rep, sales_manager, wallboard

# File name (without .json) -> dashboard module, in the order of the Grafana folder.
DASHBOARDS = {
    "executive": executive,
    "sales-manager": sales_manager,
    "rep": rep,
    "wallboard": wallboard,
}
