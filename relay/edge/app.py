"""The relay's HTTP surface: the webhook endpoint, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
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
from relay.edge.body import read_body
from relay.events.build import EventTransform, MayTransform, build_batch, dead_letter
from relay.events.records import OutboundRecord
from relay.events.split import split
from relay.kafka.publisher import KafkaPublisher
from relay.metrics import CONTENT_TYPE, RelayMetrics
from relay.settings import RelaySettings

log = logging.getLogger(__name__)

Deliver = Callable[[Sequence[OutboundRecord]], Awaitable[None]]
RETRY_AFTER_SECONDS = "5"


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
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.metrics = metrics
        self.deliver = deliver
        self.transform = transform
        self.may_transform = may_transform

    async def receive(self, request: web.Request) -> web.Response:
        timeout = self.settings.limits.client_timeout
        try:
            async with asyncio.timeout(timeout):
                body = await read_body(request, self.settings.max_body_bytes)
        except TimeoutError as exc:
            raise RequestTimeout(f"request body not received within {timeout:g}s") from exc
        self.metrics.request_bytes.inc(len(body))
        cluster = request.get(CLUSTER, self.settings.cluster)
        limit = self.settings.publisher.max_message_bytes // 2
        try:
            items, api_version = split(body)
        except BadRequest as exc:
            # Keep what was sent, so that a sender's bug loses nothing; 503 if even that fails.
            await self.deliver([dead_letter(body, str(exc), cluster, limit)])
            self.metrics.events_dead_lettered.inc()
            raise
        batch = build_batch(
            items,
            api_version,
            cluster,
            fits=self.publisher.fits,
            dead_letter_limit=limit,
            transform=self.transform,
            may_transform=self.may_transform,
        )
        await self.deliver(batch.records)
        self.metrics.events_accepted.inc(batch.accepted)
        self.metrics.events_dead_lettered.inc(batch.dead_lettered)
        self.metrics.events_truncated.inc(batch.truncated)
        self.metrics.events_redacted.inc(batch.transformed)
        self.metrics.events_per_request.observe(len(items))
        if batch.dead_lettered or batch.truncated:
            log.warning(
                "request of %d items: %d dead-lettered, %d truncated to fit the broker",
                len(items),
                batch.dead_lettered,
                batch.truncated,
            )
        return web.json_response({"accepted": batch.accepted, "deadLettered": batch.dead_lettered})


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
    webhook = WebhookHandler(
        settings, publisher, metrics, deliver or publisher.publish, transform, may_transform
    )

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
    app.router.add_post(settings.path, webhook.receive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
