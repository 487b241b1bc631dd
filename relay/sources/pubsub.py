"""``audit-source pubsub``: GKE's audit log, from a Pub/Sub subscription fed by a log sink.

A Cloud Logging sink publishes each LogEntry as the JSON of one Pub/Sub message; the entries
of Kubernetes audit are rebuilt into ``audit.k8s.io/v1`` Events (``relay.sources.gke_audit``),
other entries are skipped, and data that is no LogEntry goes to the runner as it is (the build
path dead-letters it). Pub/Sub keeps the checkpoint: messages are pulled (unary Pull, up to
``--pubsub-max-messages``) and acknowledged by ``acknowledge`` only once the runner has their
chunk in Kafka or on the spool; a crash leaves them unacknowledged, and Pub/Sub delivers them
again after their ack deadline. While Kafka is slow, the deadline of the messages held is
extended (ModifyAckDeadline), so that Pub/Sub does not deliver them again meanwhile. The
checkpoint file keeps only the runner's count of events under way.

Credentials: Application Default Credentials (GKE's workload identity), or none with
``--pubsub-endpoint`` (an emulator, plain gRPC).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import google.auth
import grpc
from google.api_core import exceptions as api
from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError
from google.pubsub_v1 import PullResponse, SubscriberAsyncClient
from google.pubsub_v1.services.subscriber.transports.grpc_asyncio import (
    SubscriberGrpcAsyncIOTransport,
)

from audit_common.errors import ConfigError, SourceError
from audit_common.options import EnvArgumentParser, host_port
from relay.sources.backoff import with_retries
from relay.sources.base import Chunk, OnError, Position, Source
from relay.sources.gke_audit import message_item

log = logging.getLogger(__name__)

T = TypeVar("T")
SUBSCRIPTION = re.compile(r"projects/[^/]+/subscriptions/[^/]+")
_SCOPE = "https://www.googleapis.com/auth/pubsub"
# Failures worth waiting out, by the kind counted in audit_source_errors_total.
_RETRIED: dict[type[Exception], str] = {
    api.ServiceUnavailable: "unavailable",
    api.DeadlineExceeded: "deadline",
    api.InternalServerError: "internal",
    api.ResourceExhausted: "throttled",
    api.Aborted: "aborted",
    api.Unknown: "unknown",
    RefreshError: "credentials",
    TransportError: "credentials",
}
_MAX_BACKOFF_S = 30.0
# How long a Pull may wait for messages (Pub/Sub answers sooner, with none if there are none).
_PULL_TIMEOUT_S = 60.0
_CALL_TIMEOUT_S = 30.0
# The pause of the loop that extends the ack deadlines of the messages held.
_EXTEND_TICK_S = 0.5


def failure_kind(exc: Exception, what: str) -> str | None:
    """How ``with_retries`` treats a failed call: a temporary failure's kind, or SourceError for
    a refusal that lasts (permission denied, no such subscription, a malformed request)."""
    for cls, kind in _RETRIED.items():
        if isinstance(exc, cls):
            return kind
    if isinstance(exc, api.GoogleAPICallError):
        raise SourceError(f"Pub/Sub refused {what}: {exc}") from exc
    return None


@dataclass
class _Held:
    """The ack ids of a chunk pulled and not yet acknowledged, and when to extend them."""

    ack_ids: list[str]
    extend_at: float


class PubSubSource(Source):
    """Pulls one subscription; one client per ``read``."""

    kind: ClassVar[str] = "pubsub"

    def __init__(
        self,
        subscription: str,
        *,
        endpoint: str | None,
        ack_deadline: int,
        max_messages: int,
        poll_interval: float,
        max_backoff: float = _MAX_BACKOFF_S,
    ) -> None:
        self.subscription = subscription
        self.endpoint = endpoint
        self.ack_deadline = ack_deadline
        self.max_messages = max_messages
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self._held: dict[int, _Held] = {}
        self._client: SubscriberAsyncClient | None = None
        self._on_error: OnError = lambda kind: None

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        add = parser.add_option
        add("--subscription", help="pubsub: projects/PROJECT/subscriptions/NAME (required)")
        add(
            "--pubsub-endpoint",
            type=host_port,
            help="pubsub: HOST:PORT of a Pub/Sub emulator, spoken to without TLS or "
            "credentials (default: Google's endpoint, with Application Default Credentials)",
        )
        add(
            "--pubsub-ack-deadline",
            type=int,
            default=10,
            help="pubsub: the subscription's ack deadline in seconds; messages held longer than "
            "half of it (Kafka slow) get it again, until acknowledged",
        )
        add(
            "--pubsub-max-messages",
            type=int,
            default=1000,
            help="pubsub: messages per Pull, 1-1000 (a chunk)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PubSubSource:
        if not args.subscription:
            raise ConfigError("audit-source pubsub needs --subscription")
        if not SUBSCRIPTION.fullmatch(args.subscription):
            raise ConfigError(
                f"--subscription must be projects/PROJECT/subscriptions/NAME, got "
                f"{args.subscription!r}"
            )
        if not 1 <= args.pubsub_ack_deadline <= 600:
            raise ConfigError("--pubsub-ack-deadline must be 1-600 seconds")
        if not 1 <= args.pubsub_max_messages <= 1000:
            raise ConfigError("--pubsub-max-messages must be 1-1000")
        endpoint = None
        if args.pubsub_endpoint:
            host, port = args.pubsub_endpoint
            endpoint = f"{host}:{port}"
        return cls(
            args.subscription,
            endpoint=endpoint,
            ack_deadline=args.pubsub_ack_deadline,
            max_messages=args.pubsub_max_messages,
            poll_interval=args.poll_interval,
        )

    async def read(
        self, position: Position | None, on_error: OnError
    ) -> AsyncGenerator[Chunk, None]:
        # Pub/Sub keeps where reading resumes: the position is only the chunk's number, for
        # ``acknowledge`` to find its ack ids.
        self._on_error = on_error
        async with await self._open() as client:
            self._client = client
            extending = asyncio.create_task(self._extend_held(client), name="ack-deadlines")
            try:
                number = 0
                while True:
                    response = await self._retry(
                        lambda: client.pull(
                            subscription=self.subscription,
                            max_messages=self.max_messages,
                            retry=None,
                            timeout=_PULL_TIMEOUT_S,
                        ),
                        "Pull",
                    )
                    # The protobuf message under proto-plus' wrapper: reading each message's
                    # fields through the wrapper costs more than rebuilding the event.
                    received = PullResponse.pb(response).received_messages
                    if not received:
                        yield Chunk([], {}, caught_up=True)
                        # A Pull may answer at once with nothing: no busy loop.
                        await asyncio.sleep(self.poll_interval)
                        continue
                    number += 1
                    self._held[number] = _Held(
                        [m.ack_id for m in received], time.monotonic() + self.ack_deadline / 2
                    )
                    items = [message_item(m.message.data) for m in received]
                    kept = [item for item in items if item is not None]
                    # The newest entry there could be is of now: the lag is how far the
                    # events are behind the clock.
                    skipped = len(items) - len(kept)
                    yield Chunk(kept, {"chunk": number}, time.time(), skipped=skipped)
            finally:
                extending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await extending
                await self._release(client)
                self._client = None

    async def acknowledge(self, position: Position) -> None:
        """Acknowledge the messages of the chunk at ``position`` (called by the runner once it is
        delivered). Raises SourceError when Pub/Sub refuses for good."""
        held = self._held.pop(position.get("chunk", 0), None)
        if held is None or self._client is None:
            return
        client = self._client
        await self._retry(
            lambda: client.acknowledge(
                subscription=self.subscription,
                ack_ids=held.ack_ids,
                retry=None,
                timeout=_CALL_TIMEOUT_S,
            ),
            "Acknowledge",
        )

    async def _open(self) -> SubscriberAsyncClient:
        """A client of the emulator (plain gRPC, no credentials) or of Google (Application
        Default Credentials, found in a thread: it may ask the metadata server)."""
        if self.endpoint:
            options = [("grpc.max_receive_message_length", -1)]
            channel = grpc.aio.insecure_channel(self.endpoint, options=options)
            # A channel of our own: the transport then asks for no credentials.
            transport = SubscriberGrpcAsyncIOTransport(channel=channel)
        else:
            try:
                credentials, _ = await asyncio.to_thread(google.auth.default, scopes=[_SCOPE])
            except DefaultCredentialsError as exc:
                raise SourceError(f"no Google credentials for Pub/Sub: {exc}") from exc
            transport = SubscriberGrpcAsyncIOTransport(credentials=credentials)
        return SubscriberAsyncClient(transport=transport)

    async def _extend_held(self, client: SubscriberAsyncClient) -> None:
        """While ``read`` runs: give each chunk held past half its ack deadline the deadline
        again (its delivery to Kafka is slow), so that Pub/Sub does not deliver it again."""
        while True:
            await asyncio.sleep(_EXTEND_TICK_S)
            now = time.monotonic()
            for held in list(self._held.values()):
                if held.extend_at > now:
                    continue
                try:
                    await self._modify(client, held.ack_ids, self.ack_deadline)
                except SourceError as exc:
                    log.warning("cannot extend the ack deadline of held messages: %s", exc)
                held.extend_at = time.monotonic() + self.ack_deadline / 2

    async def _release(self, client: SubscriberAsyncClient) -> None:
        """At the end of ``read``: the messages still held (not delivered within the stop's
        grace) are handed back to Pub/Sub at once (deadline 0) for another reader, best effort:
        otherwise they come back after their deadline."""
        held, self._held = list(self._held.values()), {}
        ack_ids = [ack_id for chunk in held for ack_id in chunk.ack_ids]
        if not ack_ids:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._modify(client, ack_ids, 0, retried=False), 5)
            log.info("handed %d messages not delivered back to Pub/Sub", len(ack_ids))

    async def _modify(
        self, client: SubscriberAsyncClient, ack_ids: list[str], seconds: int, retried: bool = True
    ) -> None:
        async def call() -> None:
            await client.modify_ack_deadline(
                subscription=self.subscription,
                ack_ids=ack_ids,
                ack_deadline_seconds=seconds,
                retry=None,
                timeout=_CALL_TIMEOUT_S,
            )

        if retried:
            await self._retry(call, "ModifyAckDeadline")
        else:
            await call()

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        def classify(exc: Exception) -> str | None:
            return failure_kind(exc, f"{what} of {self.subscription}")

        return await with_retries(
            call, self._on_error, f"{what} of {self.subscription}", classify,
            max_backoff=self.max_backoff,
        )  # fmt: skip
