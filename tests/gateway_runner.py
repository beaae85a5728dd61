"""A real gateway in a background thread, and plain HTTP posts to it (for the e2e tests)."""

from __future__ import annotations

import asyncio
import threading
import traceback
import urllib.error
import urllib.request
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.config import Config, KafkaConfig
from engine.kafka_client import client_kwargs
from engine.kafka_local import free_port
from gateway.object_state import _behind, _partitions
from gateway.server import serve


class GatewayThread:
    """``with GatewayThread(config) as gw: gw.post(path, body, headers)``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            task = asyncio.create_task(serve(self.config, host="127.0.0.1", port=self.port,
                                             ready=ready, stop=self._stop))
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            self._ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by __enter__/__exit__
            traceback.print_exc()  # shown by pytest when the test fails
            self._error = exc
            self._ready.set()

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"the gateway did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None,
             timeout: float = 60) -> tuple[int, bytes, dict[str, str]]:
        request = urllib.request.Request(self.url + path, data=body, method="POST",
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)


def read_topic(bootstrap: str | None, topic: str, timeout: float = 10.0,
               kafka: KafkaConfig | None = None) -> list[Any]:
    """Every record of ``topic`` now (value as JSON where it is JSON, headers as a dict);
    ``kafka`` gives the client settings (a principal of a secure broker) instead of
    ``bootstrap``."""
    async def go() -> list[Any]:
        settings = client_kwargs(kafka) if kafka else {"bootstrap_servers": bootstrap}
        consumer = AIOKafkaConsumer(**settings, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p)
                          for p in sorted(await _partitions(consumer, topic))]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            out = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while await _behind(consumer, partitions, ends):
                if loop.time() > deadline:
                    raise TimeoutError(f"could not read {topic} to its end")
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(records)
            out.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
            return out
        finally:
            await consumer.stop()

    return asyncio.run(go())


def events_of(records: list[Any]) -> list[dict]:
    return [orjson.loads(r.value) for r in records]
