"""One mapper per CRM: authenticate a delivery, read it, map it to contract events.

Each module holds one source kind; :func:`build_source` makes the configured one. Mappers are
pure apart from the HubSpot object state they read, so fixtures test them without a server.
"""

from __future__ import annotations

from engine.config import GatewaySource
from gateway.sources.base import MappingContext, Source


def build_source(source: GatewaySource, context: MappingContext) -> Source:
    if source.kind == "contract":
        from gateway.sources.contract import ContractSource
        return ContractSource(source, context)
    if source.kind == "pipedrive":
        from gateway.sources.pipedrive import PipedriveSource
        return PipedriveSource(source, context)
    if source.kind == "hubspot":
        from gateway.sources.hubspot import HubSpotSource
        return HubSpotSource(source, context)
    if source.kind == "salesforce":
        from gateway.sources.salesforce import SalesforceSource
        return SalesforceSource(source, context)
    raise ValueError(f"unknown source kind {source.kind!r}")
