"""People: the roster that names reps and teams and maps CRM users to them.

Why a package of its own: the roster is read by two services — the gateway (which CRM user is
which rep) and the worker (what a rep or team is called on the wallboard and in the
``kpi_rep_info``/``kpi_team_info`` series) — from one configuration key, ``[people] roster``.
:mod:`engine.people.roster` reads the file, :mod:`engine.people.metrics` exports the names.
KPI labels stay ids everywhere; names are joined on for display only.
"""
