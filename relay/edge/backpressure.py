"""A bound on the request bytes one worker holds at a time (``--max-inflight-bytes``).

Checked before the body is read, from ``Content-Length``, so a burst of large batches is turned
away with 503 and ``Retry-After`` (the apiserver re-posts them) instead of growing memory
without limit. A body of unknown decoded size (chunked, or compressed) counts as the largest
allowed body. The bound also covers the records a producer still holds for requests already
answered (a 503 after an ack timeout leaves them in its batches until the producer is replaced):
without that, every retry of the apiserver during an outage would add its records to memory.
One request is always admitted when nothing else is held, so a single body over the bound is not
refused forever.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from audit_common.errors import Overloaded
from relay.metrics import RelayMetrics


def inflight_limit(
    max_bytes: int,
    path: str,
    unknown_size: int,
    metrics: RelayMetrics,
    unanswered: Callable[[], int],
) -> Middleware:
    """An aiohttp middleware for ``relay.edge.app.build_app``; raises Overloaded over the bound.

    ``unanswered`` gives the bytes held for Kafka on behalf of requests already answered
    (``KafkaPublisher.unanswered_bytes``).
    """
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
        others = held + unanswered()
        if others and others + size > max_bytes:
            raise Overloaded(
                f"{held} request bytes in flight and {others - held} held for Kafka; "
                f"the bound is {max_bytes}"
            )
        held += size
        metrics.bytes_in_flight.inc(size)
        try:
            return await handler(request)
        finally:
            held -= size
            metrics.bytes_in_flight.dec(size)

    return limit
