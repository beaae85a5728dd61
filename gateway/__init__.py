"""The CRM webhook gateway: CRM deliveries in, contract events (SPEC §1, §7) out to Kafka.

Why a package of its own: the gateway is a separate service in front of the engine. It shares
the configuration, the decoder's rules (every event it produces passes :func:`engine.decode`
first) and the producer's keying, and nothing else; the KPI rules stay in the engine.

Layout: :mod:`gateway.delivery` (what a mapper returns), :mod:`gateway.ids` (deterministic
event ids and timestamps), :mod:`gateway.roster` (CRM users -> reps and teams, by the roster of :mod:`engine.people`),
:mod:`gateway.validation` (the engine's decoder as the gate), :mod:`gateway.publisher` (the
idempotent producer), :mod:`gateway.object_state` (HubSpot object state in a compacted topic),
:mod:`gateway.sources` (one mapper per CRM) and :mod:`gateway.server` (the aiohttp service).
"""
