"""Number-by-number comparison of two report documents, as the acceptance checks do.

Numbers match within a relative tolerance of 1e-6 (SPEC §5); everything else must be equal,
including which keys exist and where ``null`` stands. Returns the differing paths.
"""

from __future__ import annotations

REL_TOL = 1e-6


def diff_reports(actual: object, expected: object, path: str = "") -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        out = [f"{path}/{k}: missing" for k in expected if k not in actual]
        out += [f"{path}/{k}: unexpected" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += diff_reports(actual[k], expected[k], f"{path}/{k}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected a list of {len(expected)}"]
        return [d for i, (a, e) in enumerate(zip(actual, expected))
                for d in diff_reports(a, e, f"{path}[{i}]")]
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return [] if actual == expected and type(actual) is type(expected) else [
            f"{path}: {actual!r} != {expected!r}"]
    if isinstance(expected, int):
        return [] if type(actual) is int and actual == expected else [
            f"{path}: {actual!r} != {expected!r} (integer)"]
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return [f"{path}: {actual!r} != {expected!r}"]
    if actual == expected or abs(actual - expected) <= REL_TOL * max(abs(actual), abs(expected)):
        return []
    return [f"{path}: {actual!r} != {expected!r}"]


V2_KPIS = frozenset({
    "pipeline_deals", "pipeline_amount", "pipeline_weighted", "pipeline_deals_by_stage",
    "pipeline_amount_by_stage", "pipeline_amount_by_category", "pipeline_due_amount",
    "pipeline_due_weighted", "stage_entries", "avg_days_in_stage", "forecast_commit",
    "forecast_best_case", "forecast_weighted"})
V2_TARGET_FIELDS = frozenset({"expected", "pace", "projection", "coverage",
                              "forecast_attainment"})


def without_v2(report: dict) -> dict:
    """The report as a v1 implementation writes it: SPEC §7's additions taken out (a copy).

    Written out here rather than taken from the engine, so that a KPI the engine forgot to
    list as v2 still shows up as a difference."""
    import copy

    out = copy.deepcopy(report)
    for window in out["windows"]:
        scopes = [window["company"], *window["teams"].values(), *window["reps"].values()]
        for scope in scopes:
            for kpi in V2_KPIS & set(scope["kpis"]):
                del scope["kpis"][kpi]
            for target in scope["targets"].values():
                for name in V2_TARGET_FIELDS & set(target):
                    del target[name]
    return out
