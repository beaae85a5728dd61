"""PromQL for the dashboards: selectors over the ``kpi:*`` recording rules, and window wording.

Why selectors, not free text: every KPI panel names its window with the ``period`` and
``offset`` labels the engine computed in its configured time zone (docs/metrics.md), so one
helper writes them the same way everywhere and one function describes them in words.
Ratios are read as recorded (``kpi:win_rate``) or recomputed from summed components
(``sum(won) / sum(won + lost)``); a ratio is never summed or averaged.
"""

from __future__ import annotations

# The windows the engine reports (SPEC §2): period -> offsets.
WINDOWS: dict[str, tuple[str, ...]] = {
    "day": ("0", "1"),
    "week": ("0", "1"),
    "month": ("0", "1", "12"),
    "quarter": ("0", "1", "4"),
    "year": ("0", "1"),
}


class Re(str):
    """A label value matched as a regular expression (``=~``), e.g. a multi-value variable."""


def sel(metric: str, **labels: str) -> str:
    """``metric{label="value", ...}`` in the order given; :class:`Re` values use ``=~``."""
    if not labels:
        return metric
    matchers = ", ".join(
        f'{name}{"=~" if isinstance(value, Re) else "="}"{value}"' for name, value in labels.items()
    )
    return f"{metric}{{{matchers}}}"


def ratio_of_sums(numerator: str, *denominator: str) -> str:
    """``sum(n) / ((sum(d1) + sum(d2)) > 0)``: a ratio over several scopes, exact like the rules."""
    parts = " + ".join(f"sum({d})" for d in denominator)
    if len(denominator) > 1:
        parts = f"({parts})"
    return f"sum({numerator}) / ({parts} > 0)"


def relabel(expr: str, target: str, replacement: str, source: str, regex: str) -> str:
    """``label_replace``: set label ``target`` where label ``source`` fully matches ``regex``."""
    return f'label_replace({expr}, "{target}", "{replacement}", "{source}", "{regex}")'


def window_names(expr: str) -> str:
    """Add a label ``window`` naming the offset in words, for legends."""
    expr = relabel(expr, "window", "to date", "offset", "0")
    expr = relabel(expr, "window", "previous", "offset", "1")
    return relabel(expr, "window", "a year earlier", "offset", "12|4")


_PERIOD_WORDS = {"day": "day", "week": "week", "month": "month", "quarter": "fiscal quarter",
                 "year": "fiscal year"}


def window_words(period: str, offset: str) -> str:
    """The window in words: ``("month", "1")`` -> "the previous month"."""
    if period.startswith("$"):
        noun = "period chosen in the Period variable"
    else:
        noun = _PERIOD_WORDS[period]
    if offset == "0":
        return "today so far" if period == "day" else f"the current {noun}, to date"
    if offset == "1":
        return "yesterday" if period == "day" else f"the previous {noun}"
    return f"the same {noun} one year earlier"


def window_note(period: str, offset: str | None = "0") -> str:
    """The sentence every KPI panel description ends with."""
    labels = f'period="{period}"' + ("" if offset is None else f', offset="{offset}"')
    where = ("every window of that period" if offset is None
             else window_words(period, offset))
    return (f"Window: {where} ({labels}), computed by the engine in its configured time zone "
            "(kpi_info). Grafana's time range does not change this number.")


TREND_NOTE = ("Each point is the window's value as of that instant, computed by the engine in "
              "its configured time zone, so the line restarts when a new window begins; "
              "Grafana's time range only sets how much history is drawn.")


# -- display names (the roster's kpi_rep_info / kpi_team_info, docs/metrics.md) -------------------

#: One display name per rep and per team. Every worker (and gateway) exports the roster, so the
#: copies are collapsed with ``max by``; ``topk by (…) (1, …)`` keeps one name per id even while
#: a renamed rep's old and new names are both exported (a rolling restart with a new roster),
#: where a plain ``group_left`` would fail with "many-to-many matching".
REP_NAMES = "topk by (rep) (1, max by (rep, rep_name) (kpi_rep_info))"
TEAM_NAMES = "topk by (team) (1, max by (team, team_name) (kpi_team_info))"
NAME_INFO = {"rep": REP_NAMES, "team": TEAM_NAMES}


def named(expr: str, key: str) -> str:
    """``expr`` with a ``<key>_name`` label (``rep_name`` or ``team_name``) for legends.

    The name is joined from the roster's info series; a rep or team the roster does not list
    keeps its series, named by its id (``or`` adds ``expr`` with the id copied into the name
    label, only where the join found nothing). Values are never changed, and a series without
    the ``key`` label (company scope) passes through without a name.
    """
    label = f"{key}_name"
    fallback = relabel(relabel(expr, label, "$1", key, "(.+)"), "__name__", "", "", "")
    return (f"({expr} * on({key}) group_left({label}) {NAME_INFO[key]}) "
            f"or ignoring({label}) {fallback}")


def name_options(expr: str, key: str) -> str:
    """One series per ``key`` id of ``expr``, labelled ``{key, <key>_name}``: a dropdown's options.

    ``named()`` gives each id its roster name (or the id itself where the roster has none);
    ``group by`` collapses the periods, offsets, teams… of ``expr`` to one series per id, whose
    only labels are the id and the name, in that order (Prometheus sorts label names), so
    Grafana's ``query_result`` line has a fixed shape that :func:`name_option_regex` reads.
    """
    return f"group by ({key}, {key}_name) ({named(expr, key)})"


def name_option_regex(key: str) -> str:
    """The variable regex that turns a :func:`name_options` line into (text=name, value=id).

    Grafana prints a ``query_result`` series as ``{rep="rep-017",rep_name="Anna Schmidt"} 1 <ms>``
    (label values unescaped) and applies the regex as JavaScript; the named groups ``text`` and
    ``value`` become the option's text and value. The id is everything up to the first
    ``",<key>_name="`` and the name everything up to the last ``"} `` (``[\\s\\S]``, so either
    may hold quotes, braces or a line break; no ``s`` flag, which older Grafanas reject). The
    pattern has no ``$``, which Grafana would read as a template variable.
    """
    return f'/\\{{{key}="(?<value>[\\s\\S]*?)",{key}_name="(?<text>[\\s\\S]*)"\\}} /'
