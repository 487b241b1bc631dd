"""Limits that keep hostile or broken clients from tying up a worker.

- Header size: aiohttp refuses with 400 a request line or a header field over 8190 bytes and
  more than 64 header fields (so at most about 512 KiB of headers); the apiserver sends six
  short ones, and a bearer token of a few KiB fits.
- Slow clients (``--client-timeout``): a connection that does not complete its TLS handshake,
  or the headers of its first request, within the timeout is closed; so is one idle for that
  long after its last response. The body must then arrive within the same time, or 408
  (relay.edge.app). The apiserver gives up on a call after 30 s, so a slower client is of no use.
- Concurrent connections (``--max-connections``, per worker): beyond it a new connection gets
  503 with ``Retry-After`` and is closed, which client-go retries within its 30 s window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from audit_common.options import EnvArgumentParser, positive_float, positive_int

MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 64
_REFUSAL_LINGER = 1.0
_REFUSAL_BODY = b'{"error":"too many connections","status":503}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


@dataclass(frozen=True)
class ClientLimits:
    """Per-worker limits on connections and on how long clients take."""

    max_connections: int = 1024
    client_timeout: float = 60.0

    def runner_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``web.AppRunner`` (passed on to each connection's handler)."""
        return {
            "keepalive_timeout": self.client_timeout,
            "max_line_size": MAX_LINE_BYTES,
            "max_field_size": MAX_FIELD_BYTES,
            "max_headers": MAX_HEADERS,
        }


def add_limit_arguments(parser: EnvArgumentParser) -> None:
    """Add the client limit flags of ``audit-relay``."""
    add = parser.add_option
    add(
        "--max-connections",
        type=positive_int,
        default=1024,
        help="open client connections per worker; beyond it new ones get 503 and are closed",
    )
    add(
        "--client-timeout",
        type=positive_float,
        default=60.0,
        help="seconds a client may take for the TLS handshake and a request's headers, then "
        "for its body, and may stay idle between requests",
    )


def limits_from_args(args: Any) -> ClientLimits:
    return ClientLimits(args.max_connections, args.client_timeout)


class _Counted(asyncio.Protocol):
    """Counts a connection from the moment it is established (after any TLS handshake).

    Counting here, not when the protocol is made, keeps the count exact: asyncio makes the
    protocols of a burst of accepted connections before any of them is established, and never
    tells the protocol of a failed handshake. Over the limit it answers 503 without reading.
    """

    def __init__(self, site: LimitedSite, inner: asyncio.Protocol) -> None:
        self.site = site
        self.inner: asyncio.Protocol | None = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.site.open_connections >= self.site.limits.max_connections:
            self.inner = None
            self.site.on_refused()
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_REFUSAL)
            # Closing with the request unread would reset the connection, and the client lose
            # the answer: say we are done, discard what comes, close a second later.
            if transport.can_write_eof():
                transport.write_eof()
            asyncio.get_running_loop().call_later(_REFUSAL_LINGER, transport.close)
            return
        self.site.open_connections += 1
        assert self.inner is not None
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.site.open_connections -= 1
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else False

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class LimitedSite(web.TCPSite):
    """A ``TCPSite`` that bounds its open connections and the TLS handshake time.

    ``relay.edge.server`` starts one per worker; ``on_refused`` is called for each connection
    turned away (for a metric).
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: ClientLimits,
        on_refused: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.limits = limits
        self.on_refused = on_refused
        self.open_connections = 0

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        return _Counted(self, server())

    async def start(self) -> None:
        # TCPSite.start, with a protocol factory that counts, and a handshake timeout.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.limits.client_timeout if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]
