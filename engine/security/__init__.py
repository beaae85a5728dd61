"""Who may read which numbers: bearer tokens, audiences, and the TLS of the web endpoints.

Why a package of its own: access control is one concept that the worker's HTTP layer, the
CLI (``kpi-engine token``) and the demo share, and it must stay independent of Faust so that
the rules (what each audience sees) are testable as pure functions.
"""
