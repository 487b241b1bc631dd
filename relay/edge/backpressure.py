"""A bound on the request bytes one worker holds at a time (``--max-inflight-bytes``).

Checked before the body is read, from ``Content-Length``, so a burst of large batches is turned
away with 503 and ``Retry-After`` (the apiserver re-posts them) instead of growing memory
without limit. A body of unknown decoded size (chunked, or compressed) counts as the largest
allowed body. One request is always admitted when nothing else is in flight, so a single body
over the bound is not refused forever.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from audit_common.errors import Overloaded
from relay.metrics import RelayMetrics


def inflight_limit(
    max_bytes: int, path: str, unknown_size: int, metrics: RelayMetrics
) -> Middleware:
    """An aiohttp middleware for ``relay.edge.app.build_app``; raises Overloaded over the bound."""
    held = 0

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal held
        if request.path != path or request.method != "POST":
            return await handler(request)
        size = request.content_length
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if size is None or encoding not in ("", "identity"):
            size = unknown_size
        if held and held + size > max_bytes:
            raise Overloaded(f"{held} request bytes in flight; the bound is {max_bytes}")
        held += size
        metrics.bytes_in_flight.inc(size)
        try:
            return await handler(request)
        finally:
            held -= size
            metrics.bytes_in_flight.dec(size)

    return limit
