"""A bound on the bytes one worker holds for requests at a time (``--max-inflight-bytes``).

Checked twice per request. Before the body is read, from ``Content-Length``, so a burst of large
batches is turned away with 503 and ``Retry-After`` (the apiserver re-posts them) instead of
growing memory without limit; a body of unknown decoded size (chunked, or compressed) counts as
the largest allowed body. Then, once the body is split and before its records are built, the
records it will make are added: their values copy about the body's bytes, and each record also
costs a fixed ``RECORD_BYTES`` of Python objects, which for tiny items is most of it (a body of a
million one-byte items once built 418 MB of records). A request whose records alone would
exceed the bound is refused with 413, since it can never fit; one that fits alone but not
beside the others, with 503.

The bound also covers the records a producer still holds for requests already answered (a 503
after an ack timeout leaves them in its batches until the producer is replaced): without that,
every retry of the apiserver during an outage would add its records to memory. One request is
always admitted when nothing else is held, so a single body over the bound is not refused
forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from audit_common.errors import Overloaded, PayloadTooLarge
from relay.metrics import RelayMetrics

# What one built record holds beyond its value's bytes, measured with tracemalloc on records
# built by ``relay.events.build`` (bench/hostile_memory.py prints the RSS it amounts to): the
# record, its value and key objects and its headers (an event record has up to nine, 950 bytes
# in all; a dead letter three, 410 bytes), rounded up.
RECORD_BYTES = 1024


class Reservation:
    """The bytes held for one request; ``records`` adds those of the records it will build.

    Made by ``inflight_limit`` for each webhook request, as ``request[RESERVATION]``; the webhook
    handler calls ``records`` from whichever thread builds them.
    """

    def __init__(self, bound: InflightBound, size: int) -> None:
        self._bound = bound
        self.size = size
        self.released = False

    def records(self, count: int, value_bytes: int) -> None:
        """Hold the bytes of ``count`` records about to be built, whose values take about
        ``value_bytes``. Raises PayloadTooLarge when they alone exceed the bound, Overloaded
        when they do beside what else is held."""
        self._bound.add_records(self, count * RECORD_BYTES + value_bytes, count)


RESERVATION = web.RequestKey("inflight_reservation", Reservation)


class InflightBound:
    """The bytes held by a worker's requests, under a lock: records are counted in threads."""

    def __init__(
        self, max_bytes: int, metrics: RelayMetrics, unanswered: Callable[[], int]
    ) -> None:
        self.max_bytes = max_bytes
        self._metrics = metrics
        self._unanswered = unanswered
        self._lock = threading.Lock()
        self._held = 0

    def admit(self, size: int) -> Reservation:
        """Hold ``size`` bytes for a request about to be read. Raises Overloaded over the bound,
        unless nothing else is held."""
        with self._lock:
            others = self._held + self._unanswered()
            if others and others + size > self.max_bytes:
                raise Overloaded(
                    f"{self._held} request bytes in flight and {others - self._held} held for "
                    f"Kafka; the bound is {self.max_bytes}"
                )
            self._held += size
        self._metrics.bytes_in_flight.inc(size)
        return Reservation(self, size)

    def add_records(self, reservation: Reservation, weight: int, count: int) -> None:
        if weight > self.max_bytes:
            raise PayloadTooLarge(
                f"{count} items would build {weight} bytes of records, over "
                f"--max-inflight-bytes {self.max_bytes}: send fewer items per request"
            )
        with self._lock:
            if reservation.released:  # the request is gone: its thread builds for nobody
                return
            others = self._held - reservation.size + self._unanswered()
            if others and others + reservation.size + weight > self.max_bytes:
                raise Overloaded(
                    f"the {count} records of this request and the {others} bytes held for "
                    f"others are over the bound of {self.max_bytes}"
                )
            self._held += weight
            reservation.size += weight
        self._metrics.bytes_in_flight.inc(weight)

    def release(self, reservation: Reservation) -> None:
        """Let go of what ``reservation`` holds; once, when its request is answered."""
        with self._lock:
            size, reservation.size, reservation.released = reservation.size, 0, True
            self._held -= size
        self._metrics.bytes_in_flight.dec(size)


def inflight_limit(
    max_bytes: int,
    path: str,
    unknown_size: int,
    metrics: RelayMetrics,
    unanswered: Callable[[], int],
) -> Middleware:
    """An aiohttp middleware for ``relay.edge.app.build_app``; raises Overloaded over the bound,
    and sets ``request[RESERVATION]`` for the handler to add the records it builds.

    ``unanswered`` gives the bytes held for Kafka on behalf of requests already answered
    (``KafkaPublisher.unanswered_bytes``).
    """
    bound = InflightBound(max_bytes, metrics, unanswered)

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != path or request.method != "POST":
            return await handler(request)
        size = request.content_length
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if size is None or encoding not in ("", "identity"):
            size = unknown_size
        reservation = request[RESERVATION] = bound.admit(size)
        try:
            return await handler(request)
        finally:
            bound.release(reservation)

    return limit
