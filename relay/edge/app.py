"""The relay's HTTP surface: the webhook endpoint, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from audit_common.errors import (
    AuditRelayError,
    BadRequest,
    KafkaUnavailable,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    UnsupportedEncoding,
)
from relay.edge.auth import CLUSTER
from relay.edge.backpressure import RESERVATION
from relay.edge.body import read_body
from relay.edge.offload import Offload
from relay.events.build import Batch, EventTransform, MayTransform, build_batch
from relay.events.dead_letters import dead_letter
from relay.events.records import OutboundRecord
from relay.events.split import split
from relay.kafka.publisher import KafkaPublisher
from relay.metrics import CONTENT_TYPE, RelayMetrics
from relay.settings import RelaySettings

log = logging.getLogger(__name__)

Deliver = Callable[[Sequence[OutboundRecord]], Awaitable[None]]
RETRY_AFTER_SECONDS = "5"
# Bodies up to this size are split and built on the event loop: a thread hop costs more than the
# few events they hold; a larger body goes to ``Offload``'s threads, not to stall the worker.
INLINE_BODY_BYTES = 256 * 1024


def _hold_nothing(count: int, value_bytes: int) -> None:
    """Where no in-flight bound is installed (an app built for a test)."""


def status_for(error: AuditRelayError) -> int:
    """The one place that maps the relay's errors to HTTP statuses."""
    statuses: tuple[tuple[type[AuditRelayError], int], ...] = (
        (UnsupportedEncoding, 415),
        (RequestTimeout, 408),
        (BadRequest, 400),
        (PayloadTooLarge, 413),
        (Unauthorized, 401),
        (Overloaded, 503),
        (KafkaUnavailable, 503),
    )
    for kind, status in statuses:
        if isinstance(error, kind):
            return status
    return 500


def error_response(status: int, message: str, *, retriable: bool = False) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if retriable else None
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


@dataclass
class Lifecycle:
    """Whether the relay is draining; set by ``relay.edge.server`` on SIGTERM."""

    shutting_down: bool = False


class WebhookHandler:
    """Handles one webhook POST: read, parse, build records, deliver, answer."""

    def __init__(
        self,
        settings: RelaySettings,
        publisher: KafkaPublisher,
        metrics: RelayMetrics,
        deliver: Deliver,
        transform: EventTransform | None,
        may_transform: MayTransform | None,
        offload: Offload,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.metrics = metrics
        self.deliver = deliver
        self.transform = transform
        self.may_transform = may_transform
        self.offload = offload

    async def receive(self, request: web.Request) -> web.Response:
        timeout = self.settings.limits.client_timeout
        try:
            async with asyncio.timeout(timeout):
                chunks = await read_body(request, self.settings.max_body_bytes)
        except TimeoutError as exc:
            raise RequestTimeout(f"request body not received within {timeout:g}s") from exc
        size = sum(len(chunk) for chunk in chunks)
        self.metrics.request_bytes.inc(size)
        cluster = request.get(CLUSTER, self.settings.cluster)
        reservation = request.get(RESERVATION)
        hold = reservation.records if reservation is not None else _hold_nothing
        records = functools.partial(self.records, chunks, cluster, hold)
        items, batch, refused = (
            await self.offload.run(records) if size > INLINE_BODY_BYTES else records()
        )
        await self.deliver(batch.records)
        if refused is not None:
            self.metrics.events_dead_lettered.inc()
            raise refused
        self.metrics.events_accepted.inc(batch.accepted)
        self.metrics.events_dead_lettered.inc(batch.dead_lettered)
        self.metrics.events_truncated.inc(batch.truncated)
        self.metrics.events_redacted.inc(batch.transformed)
        self.metrics.events_per_request.observe(items)
        if batch.dead_lettered or batch.truncated:
            log.warning(
                "request of %d items: %d dead-lettered, %d truncated to fit the broker",
                items,
                batch.dead_lettered,
                batch.truncated,
            )
        return web.json_response({"accepted": batch.accepted, "deadLettered": batch.dead_lettered})

    def records(
        self, chunks: list[bytes], cluster: str, hold: Callable[[int, int], None]
    ) -> tuple[int, Batch, BadRequest | None]:
        """The number of items in the body of ``chunks`` and the records built of them; or, for
        a body that is no EventList or Event, the dead letter keeping it and why it is none.

        Called by ``receive``, on the event loop for a small body and in an ``Offload`` thread
        for a large one: it touches nothing of the loop's (``publisher.fits`` only compresses,
        the redactor keeps no state, ``hold`` takes a lock). Empties ``chunks``, so that the
        body is held only once. ``hold`` counts the records before they are built (their number
        and the bytes their values copy) in the in-flight bound (``relay.edge.backpressure``),
        and raises PayloadTooLarge or Overloaded when they do not fit.
        """
        body = b"".join(chunks)
        chunks.clear()
        limit = self.settings.publisher.max_message_bytes // 2
        try:
            items, api_version = split(body)
        except BadRequest as exc:
            # Keep what was sent, so that a sender's bug loses nothing; 503 if even that fails.
            # While redaction is on, only what identifies it: the redactor read none of it, and
            # a batch holding a Secret's creation would put its values on the dead-letter topic.
            withhold = self.settings.redaction.enabled
            letter = dead_letter(body, str(exc), cluster, limit, withhold=withhold)
            return 0, Batch([letter], dead_lettered=1), exc
        hold(len(items), len(body))
        batch = build_batch(
            items,
            api_version,
            cluster,
            fits=self.publisher.fits,
            dead_letter_limit=limit,
            transform=self.transform,
            may_transform=self.may_transform,
        )
        return len(items), batch, None


def build_app(
    settings: RelaySettings,
    publisher: KafkaPublisher,
    metrics: RelayMetrics,
    lifecycle: Lifecycle,
    *,
    deliver: Deliver | None = None,
    transform: EventTransform | None = None,
    may_transform: MayTransform | None = None,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """The aiohttp application; ``relay.edge.server`` runs it, tests may run it in-process."""
    offload = Offload()
    webhook = WebhookHandler(
        settings,
        publisher,
        metrics,
        deliver or publisher.publish,
        transform,
        may_transform,
        offload,
    )

    async def offload_threads(app: web.Application) -> AsyncIterator[None]:
        # Stopped at cleanup, once the requests in flight are done with it.
        async with offload:
            yield

    @web.middleware
    async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
        counted = request.path == settings.path
        if counted:
            metrics.in_flight.inc()
        try:
            response = await handler(request)
        except AuditRelayError as exc:
            status = status_for(exc)
            if status >= 500:
                log.warning("answering %d to %s: %s", status, request.remote, exc)
            message = "unauthorized" if isinstance(exc, Unauthorized) else str(exc)
            response = error_response(status, message, retriable=exc.retriable)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(exc.status, exc.reason)
        except Exception:
            # A bug, not the sender's fault: the apiserver retries, and the answer stays JSON.
            log.exception("answering 500 to %s", request.remote)
            response = error_response(500, "internal error", retriable=True)
        finally:
            if counted:
                metrics.in_flight.dec()
        if counted:
            metrics.requests.labels(str(response.status)).inc()
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        # With a spool the relay accepts while Kafka is down: still ready.
        accepting = publisher.connected or settings.delivery.spool_dir is not None
        ready = accepting and not lifecycle.shutting_down
        body = {"ready": ready, "kafka": publisher.connected, "draining": lifecycle.shutting_down}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application(middlewares=[errors_as_json, *middlewares], client_max_size=1024)
    app.cleanup_ctx.append(offload_threads)
    app.router.add_post(settings.path, webhook.receive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
