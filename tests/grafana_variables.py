"""A dashboard's query variable resolved the way Grafana resolves it: its dropdown options.

Why: the ``rep`` and ``team`` dropdowns show names while their values are ids, which depends on
three things only Grafana combines: the variable's query (``label_values`` or ``query_result``),
the line Grafana prints for each ``query_result`` series, and the variable's regex, applied with
JavaScript semantics (named groups ``text`` and ``value``). ``tests/grafana_options.mjs`` does
the last two steps in ``node``; where node is missing, the same steps run in Python with the
regex converted (``(?<name>`` -> ``(?P<name>``), which covers the patterns the dashboards use.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from prometheus_server import Prometheus

NODE = shutil.which("node") or shutil.which("nodejs")
SCRIPT = Path(__file__).resolve().parent / "grafana_options.mjs"


def options_with_node(regex: str, result: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(text, value) of each option, computed by node from the query's series."""
    assert NODE is not None, "node is not installed"
    proc = subprocess.run([NODE, str(SCRIPT)], input=json.dumps({"regex": regex,
                                                                 "result": result}),
                          capture_output=True, text=True, timeout=60, check=True)
    return [(o["text"], o["value"]) for o in json.loads(proc.stdout)]


def grafana_line(series: dict[str, Any]) -> str:
    """The line Grafana prints for one ``query_result`` series (values unescaped)."""
    metric = dict(series["metric"])
    name = metric.pop("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in metric.items())
    at, value = series["value"]
    return f"{name}{{{labels}}} {value} {float(at) * 1000:g}"


def python_regex(regex: str) -> re.Pattern[str]:
    """A Grafana variable regex as a Python pattern: ``/src/flags`` or an anchored string."""
    if not regex.startswith("/"):
        return re.compile(f"^{regex}$")
    m = re.fullmatch(r"/(.*?)/(g?i?m?y?)", regex, flags=re.DOTALL)
    assert m, f"not a regular expression: {regex}"
    flags = (re.IGNORECASE if "i" in m.group(2) else 0) | (re.MULTILINE if "m" in m.group(2)
                                                            else 0)
    return re.compile(re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", m.group(1)), flags)


def options_with_python(regex: str, result: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The same steps as ``grafana_options.mjs``, for a non-global regex."""
    pattern = python_regex(regex) if regex else None
    out: dict[str, str] = {}
    for series in result:
        text = value = grafana_line(series)
        if pattern is not None:
            m = pattern.search(value)
            if m is None:
                continue
            groups = m.groupdict()
            if groups.get("value") or groups.get("text"):
                value = groups.get("value") or groups["text"]
                text = groups.get("text") or groups["value"]
            elif m.groups():
                text = value = m.group(1)
        out.setdefault(value, text)
    return [(text, value) for value, text in out.items()]


def variable_options(prometheus: Prometheus, variable: dict[str, Any],
                     query: str) -> list[tuple[str, str]]:
    """(text, value) of the options Grafana offers for ``variable``, whose query (template
    variables already substituted) is ``query``."""
    regex = variable.get("regex") or ""
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    if m:  # the dashboards give a label_values variable no regex: its options are the values
        assert not regex, f"variable {variable['name']}: a regex on label_values is not modelled"
        return [(v, v) for v in prometheus.label_values(m.group(1), m.group(2))]
    m = re.fullmatch(r"query_result\((.+)\)", query, flags=re.DOTALL)
    assert m, f"variable {variable['name']}: unknown query {query}"
    result = prometheus.query(m.group(1))
    return (options_with_node if NODE else options_with_python)(regex, result)
