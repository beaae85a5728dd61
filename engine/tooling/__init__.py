"""Development and demo tooling: synthetic CRM traffic for demos, tests and benchmarks.

Why a package of its own: the KPI core (``engine.core``, ``engine.kpis``, ``engine.decode`` and
the modules they use) must never import anything from here. What lives here produces input for
the engine, the way a CRM would; it is used by ``kpi-engine generate``, ``kpi-engine demo``, the
benchmarks and the tests, and it may change freely without touching a KPI.
"""
