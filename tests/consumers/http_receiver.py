"""A real HTTP server on 127.0.0.1 that the http sink posts to: it records every request and
answers from a script (503, 429 ...), then with a success."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support.net import unused_port


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes  # as sent (gzip-compressed when Content-Encoding says so)
    at: float  # time.monotonic() when it arrived
    answered: Answer

    @property
    def body(self) -> bytes:
        if self.headers.get("Content-Encoding") == "gzip":
            return gzip.decompress(self.raw)
        return self.raw

    def lines(self) -> list[Any]:
        return [orjson.loads(line) for line in self.body.splitlines() if line.strip()]


def bulk_success(received: Received) -> Answer:
    """What Elasticsearch answers to a _bulk body whose every document was created."""
    items = [{"create": {"status": 201}} for _ in received.lines()[::2]]
    return Answer(200, body=orjson.dumps({"took": 1, "errors": False, "items": items}))


class Receiver:
    """Answers the first requests with ``script``, the rest with ``respond``.

    ``release``, when given, holds the first successful answer until it is set, so that a test
    can look at committed offsets while the sink still waits for a 2xx.
    """

    def __init__(
        self,
        script: Iterable[Answer] = (),
        respond: Callable[[Received], Answer] | None = None,
        *,
        release: asyncio.Event | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.script = list(script)
        self.respond = respond or (lambda received: Answer())
        self.release = release
        self.ssl_context = ssl_context
        self.requests: list[Received] = []
        self.port = unused_port()
        # Keep the body as sent, so that tests see the gzip encoding itself.
        self._runner = web.AppRunner(self._app(), auto_decompress=False)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/ingest"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        received = Received(request.path, dict(request.headers), raw, time.monotonic(), Answer())
        index = len(self.requests)
        answer = self.script[index] if index < len(self.script) else self.respond(received)
        if 200 <= answer.status < 300 and self.release is not None:
            await self.release.wait()
        self.requests.append(Received(received.path, received.headers, raw, received.at, answer))
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.answered.status < 300]

    async def __aenter__(self) -> Receiver:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()
