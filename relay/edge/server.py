"""Running one relay worker: the producer, the HTTP server, and the order they stop in."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from relay import exit_status
from relay.edge.app import Lifecycle, build_app
from relay.edge.auth import Authenticator, auth_middleware
from relay.edge.backpressure import inflight_limit
from relay.edge.limits import LimitedSite
from relay.edge.tls import ServerTLS
from relay.events.redact import Redactor
from relay.kafka.publisher import KafkaPublisher
from relay.metrics import RelayMetrics
from relay.settings import RelaySettings
from relay.spool.delivery import Delivery

log = logging.getLogger(__name__)

# Served without client authentication: kubelet probes and Prometheus have no credentials.
PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics")


async def serve(settings: RelaySettings, stop: asyncio.Event, *, reuse_port: bool = False) -> int:
    """Serve until ``stop`` is set, then shut down without losing an acknowledged event.

    Called by ``relay.cli`` in each worker; returns its exit status (``relay.exit_status``).
    Shutdown order: readyz turns false and the listening socket closes; requests in flight get
    ``shutdown_grace`` seconds to finish (each answers only after Kafka's acks or the spool's
    fsync); then the spool closes, and the producer flushes and closes within ``ack_timeout``
    + 5 s. So a stop takes at most ``shutdown_grace + ack_timeout + 5`` seconds, Kafka up or
    down.
    """
    metrics = RelayMetrics(settings.metrics_dir)
    lifecycle = Lifecycle()
    tls = ServerTLS(settings.tls) if settings.tls.enabled else None
    async with (
        KafkaPublisher(settings.publisher, metrics) as publisher,
        Delivery(settings.delivery, publisher.publish, metrics) as delivery,
        tls or contextlib.nullcontext(),
    ):
        authenticate = auth_middleware(
            Authenticator(settings.auth, settings.cluster),
            public_paths=PUBLIC_PATHS,
            on_failure=lambda reason: metrics.auth_failures.labels(reason).inc(),
        )
        redaction = settings.redaction
        redactor = Redactor(redaction.hmac_key, redaction.resources)
        limit = inflight_limit(
            settings.delivery.max_inflight_bytes,
            settings.path,
            settings.max_body_bytes,
            metrics,
            unanswered=lambda: publisher.unanswered_bytes,
        )
        app = build_app(
            settings,
            publisher,
            metrics,
            lifecycle,
            deliver=delivery.deliver,
            transform=redactor.redact if redaction.enabled else None,
            may_transform=redactor.may_redact,
            middlewares=[authenticate, limit],
        )
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=settings.shutdown_grace,
            auto_decompress=False,  # relay.edge.body decodes, to answer a bad encoding in JSON
            **settings.limits.runner_kwargs(),
        )
        await runner.setup()
        site = LimitedSite(
            runner,
            settings.listen_host,
            settings.listen_port,
            settings.limits,
            metrics.connections_refused.inc,
            ssl_context=tls.context if tls else None,
            reuse_port=reuse_port,
            backlog=1024,
        )
        await site.start()
        log.info(
            "listening on %s://%s:%d%s, publishing to topic %s at %s",
            "https" if tls else "http",
            settings.listen_host,
            settings.listen_port,
            settings.path,
            settings.publisher.topic,
            settings.publisher.connection.bootstrap,
        )
        await stop.wait()
        lifecycle.shutting_down = True
        log.info(
            "draining: no new connections, up to %.0fs for requests in flight",
            settings.shutdown_grace,
        )
        await runner.cleanup()
    if delivery.left_on_spool:
        status = exit_status.SPOOLED
    elif not publisher.delivered_everything:
        status = exit_status.KAFKA_UNAVAILABLE
        log.warning("stopped while Kafka was not acknowledging; nothing acknowledged is lost")
    else:
        status = exit_status.DELIVERED
    log.info("stopped (exit status %d)", status)
    return status
