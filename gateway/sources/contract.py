"""Contract events posted directly (scripts, integration platforms): NDJSON or a JSON array.

Authentication: ``Authorization: Bearer <secret>``. Each event is judged by the engine's
decoder; valid ones are produced byte for byte (NDJSON) and the answer lists, line by line,
``accepted`` or ``invalid`` with the SPEC §1.3 reason code. Invalid lines are also
dead-lettered, as the worker would, so that nothing sent is lost from sight.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from gateway.delivery import Delivery, Emit, Unreadable
from gateway.sources.base import Answer, ItemResult, Source, secret_equals


class ContractSource(Source):
    def authenticate(self, method: str, headers: Mapping[str, str], body: bytes) -> bool:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secret_equals(token.strip(), self.config.secret)

    async def map(self, body: bytes) -> Delivery:
        lines: list[tuple[int, bytes]] = []
        if body.lstrip()[:1] == b"[":
            try:
                array = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise Unreadable(f"the JSON array cannot be read: {exc}") from None
            if not isinstance(array, list):
                raise Unreadable("expected a JSON array or NDJSON")
            lines = [(i, orjson.dumps(item)) for i, item in enumerate(array, start=1)]
        else:
            for number, line in enumerate(body.split(b"\n"), start=1):
                line = line.removesuffix(b"\r")
                if line.strip():
                    lines.append((number, line))
        delivery = Delivery(context=[number for number, _ in lines])
        delivery.items = [Emit(raw, raw) for _, raw in lines]
        return delivery

    def answer(self, delivery: Delivery, results: list[ItemResult]) -> Answer:
        rows = []
        for line, result in zip(delivery.context, results):
            if result.status == "accepted":
                rows.append({"line": line, "status": "accepted", "event_id": result.event_id})
            else:
                rows.append({"line": line, "status": "invalid", "reason": result.reason,
                             "detail": result.detail})
        accepted = sum(r["status"] == "accepted" for r in rows)
        return 200, "application/json", orjson.dumps(
            {"accepted": accepted, "invalid": len(rows) - accepted, "results": rows})
