"""Grafana dashboards as code: Python (grafana-foundation-sdk) in, committed JSON out.

``grafana/dashboards_src/`` holds one module per dashboard, ``grafana/build.py`` renders them
into ``grafana/dashboards/*.json`` (``python -m grafana.build`` or ``kpi-engine grafana build``),
and ``grafana/provisioning/`` lets a Grafana container load them. See ``grafana/README.md``.
"""
