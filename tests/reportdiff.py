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
