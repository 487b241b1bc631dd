"""Running one audit source: read chunks, build records as the webhook does, deliver them, and
record the checkpoint only once they are in Kafka or on the spool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from aiohttp import web
from msgspec import Raw

from audit_common.errors import AuditRelayError, KafkaUnavailable, Overloaded
from audit_common.headers import SOURCE
from relay import exit_status
from relay.events.build import build_batch, passed_through
from relay.events.records import EVENTS, OutboundRecord
from relay.events.redact import Redactor
from relay.kafka.publisher import KafkaPublisher
from relay.metrics import CONTENT_TYPE, RelayMetrics
from relay.sources.base import Chunk, Position, Source
from relay.sources.checkpoint import Checkpoint, CheckpointFile
from relay.sources.metrics import SourceMetrics
from relay.sources.settings import SourceSettings
from relay.spool.delivery import Delivery

log = logging.getLogger(__name__)

# Lines of an audit.log carry their own apiVersion; this is for those that do not.
API_VERSION = "audit.k8s.io/v1"
# How kube-apiserver's log backend begins each line (json.Marshal of an audit.k8s.io/v1 Event).
_ENVELOPE = b'{"kind":"Event","apiVersion":"%s",' % API_VERSION.encode()
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 5.0


@dataclass
class _State:
    """What the health endpoints report."""

    reading: bool = False
    stopping: bool = False


class SourceRunner:
    """Delivers a source's chunks in order; owned by ``run_source``.

    ``deliver_chunk`` is the one step per chunk: checkpoint marked pending, records built,
    delivered (retried while Kafka and the spool refuse), checkpoint recorded.
    """

    def __init__(
        self,
        settings: SourceSettings,
        source: Source,
        checkpoints: CheckpointFile,
        publisher: KafkaPublisher,
        delivery: Delivery,
        metrics: RelayMetrics,
        source_metrics: SourceMetrics,
    ) -> None:
        self.settings = settings
        self.source = source
        self.checkpoints = checkpoints
        self.publisher = publisher
        self.delivery = delivery
        self.metrics = metrics
        self.source_metrics = source_metrics
        redaction = settings.redaction
        redactor = Redactor(redaction.hmac_key, redaction.resources)
        self._transform = redactor.redact if redaction.enabled else None
        self._may_transform = redactor.may_redact
        self._source_header = (SOURCE, source.kind.encode())
        self.delivering: asyncio.Task[None] | None = None

    async def run(self, state: _State) -> None:
        """Read and deliver until cancelled; raises what the source or the checkpoint raise."""
        saved = self.checkpoints.load()
        if saved.pending:
            self.source_metrics.events_repeated.inc(saved.pending)
            log.info(
                "resuming: up to %d events after the checkpoint may reach Kafka twice",
                saved.pending,
            )
        state.reading = True
        position = saved.position
        chunks = self.source.read(position, self._count_error)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if state.stopping:  # read while the last chunk was finishing: read again later
                    return
                # Shielded: a stop lets the chunk under way finish and be acknowledged while the
                # source is still open; only then is the reading cancelled (``run_source``).
                self.delivering = asyncio.ensure_future(self.deliver_chunk(position, chunk))
                await asyncio.shield(self.delivering)
                self.delivering = None
                position = chunk.position

    async def deliver_chunk(self, previous: Position | None, chunk: Chunk) -> None:
        """Deliver one chunk and record its position. Called by ``run`` for each chunk."""
        metrics, source_metrics = self.metrics, self.source_metrics
        source_metrics.entries_skipped.inc(chunk.skipped)
        if chunk.items:
            source_metrics.events_read.inc(len(chunk.items))
            self.checkpoints.save(Checkpoint(previous, len(chunk.items)))
            records = self.records(chunk.items)
            await self._deliver(records)
            batch_events = [r for r in records if r.topic == EVENTS]
            dead = len(records) - len(batch_events)
            metrics.events_accepted.inc(len(batch_events))
            metrics.events_dead_lettered.inc(dead)
            if dead:
                log.warning(
                    "%d of %d items read were not audit events: dead-lettered",
                    dead,
                    len(chunk.items),
                )
            stamps = [r.timestamp_ms for r in batch_events if r.timestamp_ms is not None]
            if chunk.caught_up:
                source_metrics.lag.set(0)
            elif chunk.newest is not None and stamps:
                source_metrics.lag.set(max(0.0, chunk.newest - stamps[-1] / 1000))
        elif chunk.caught_up:
            source_metrics.lag.set(0)
        self.checkpoints.save(Checkpoint(chunk.position))
        await self.source.acknowledge(chunk.position)
        source_metrics.checkpointed()

    async def finish_delivering(self) -> bool:
        """At a stop: give the chunk under way the ack timeout (and a margin) to be delivered and
        checkpointed; whether it was. Otherwise it is read again at the next start."""
        assert self.delivering is not None
        try:
            await asyncio.wait_for(self.delivering, self.settings.publisher.ack_timeout + 5)
        except TimeoutError:
            log.warning(
                "stopped before Kafka acknowledged the chunk under way: it is read again, from "
                "the checkpoint, at the next start"
            )
            return False
        return True

    def records(self, lines: list[bytes]) -> list[OutboundRecord]:
        """The records of a chunk's items, in order, built as the webhook's are, each with the
        ``source`` header.

        A line of an audit.log starts with ``kind`` and ``apiVersion``, which the webhook's
        items lack: without them (``_ENVELOPE``) an event is passed through as its own bytes
        (``build.passed_through`` puts them back in front, so the value is the line as written);
        one that cannot be (a Secret to redact, too large, not an event) goes through
        ``build_batch`` alone, so that a dead letter lists the line as it was read.
        """
        built: list[OutboundRecord] = []
        limit = self.settings.publisher.max_message_bytes // 2
        for line in lines:
            record = None
            if line.startswith(_ENVELOPE):
                record = passed_through(
                    Raw(b"{" + line[len(_ENVELOPE) :]),
                    API_VERSION,
                    self.settings.cluster,
                    self.publisher.fits,
                    self._transform,
                    self._may_transform,
                )
            if record is not None:
                built.append(record)
                continue
            batch = build_batch(
                [Raw(line)],
                API_VERSION,
                self.settings.cluster,
                fits=self.publisher.fits,
                dead_letter_limit=limit,
                transform=self._transform,
                may_transform=self._may_transform,
            )
            self.metrics.events_truncated.inc(batch.truncated)
            self.metrics.events_redacted.inc(batch.transformed)
            built.extend(batch.records)
        return [replace(r, headers=(*r.headers, self._source_header)) for r in built]

    async def _deliver(self, records: Sequence[OutboundRecord]) -> None:
        """Deliver until Kafka acknowledged or the spool holds them: a source cannot answer 503,
        so it waits, retrying with backoff, and reads nothing more meanwhile."""
        delay = _RETRY_FIRST_S
        while True:
            try:
                await self.delivery.deliver(records)
                return
            except (KafkaUnavailable, Overloaded) as exc:
                self._count_error("deliver")
                log.warning(
                    "cannot deliver %d records (%s); retrying in %.1fs", len(records), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    def _count_error(self, kind: str) -> None:
        self.source_metrics.errors.labels(kind).inc()


def health_app(
    state: _State, publisher: KafkaPublisher, spooling: bool, metrics: RelayMetrics
) -> web.Application:
    """/healthz, /readyz and /metrics, as the relay serves them."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        accepting = publisher.connected or spooling
        ready = accepting and state.reading and not state.stopping
        body = {
            "ready": ready,
            "kafka": publisher.connected,
            "reading": state.reading,
            "draining": state.stopping,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def run_source(settings: SourceSettings, source: Source, stop: asyncio.Event) -> int:
    """Run ``source`` until ``stop`` is set or it fails; return the exit status.

    Called by ``relay.sources.cli``. On stop, the chunk under way is delivered and checkpointed
    (within the ack timeout + 5 s, or onto the spool), then the producer flushes and closes.
    Status (``relay.exit_status``): FAILED when the source or its checkpoint failed, SPOOLED
    with events left on the spool, KAFKA_UNAVAILABLE when the chunk under way was not
    delivered (it is read again), DELIVERED otherwise.
    """
    metrics = RelayMetrics()
    source_metrics = SourceMetrics(metrics.registry)
    state = _State()
    checkpoints = CheckpointFile(settings.checkpoint_dir, source.kind)
    status = exit_status.DELIVERED
    async with (
        KafkaPublisher(settings.publisher, metrics) as publisher,
        Delivery(settings.delivery, publisher.publish, metrics) as delivery,
    ):
        runner = SourceRunner(
            settings, source, checkpoints, publisher, delivery, metrics, source_metrics
        )
        app = health_app(state, publisher, settings.delivery.spool_dir is not None, metrics)
        web_runner = web.AppRunner(app, access_log=None)
        await web_runner.setup()
        host, port = settings.listen
        await web.TCPSite(web_runner, host, port).start()
        log.info(
            "reading %s source, publishing to topic %s at %s (health on %s:%d)",
            source.kind,
            settings.publisher.topic,
            settings.publisher.connection.bootstrap,
            host,
            port,
        )
        reading = asyncio.create_task(runner.run(state), name="source")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            state.stopping = True
            if not reading.done():
                if runner.delivering is not None and not await runner.finish_delivering():
                    status = exit_status.KAFKA_UNAVAILABLE
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
            else:
                reading.result()  # raises what stopped the source
        except AuditRelayError as exc:
            log.error("%s source stopped: %s", source.kind, exc)
            status = exit_status.FAILED
        finally:
            stopping.cancel()
            await web_runner.cleanup()
    if status == exit_status.DELIVERED and delivery.left_on_spool:
        status = exit_status.SPOOLED
    log.info("stopped (exit status %d)", status)
    return status
