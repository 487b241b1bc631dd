"""Whether any broker still answers, asked over a connection of the relay's own, not the producer's.

While acks keep a request waiting, the publisher asks this probe whether Kafka is reachable at
all: while no broker answers, aiokafka's sender refreshes metadata in a loop without pause (a
core's worth of CPU), and a producer given up stops that (the reconnects back off instead). The
question must not go over the producer's connections: a broker answers one connection's requests
in order, so there it queues behind an acks=all produce that waits for a slow follower, and a
healthy but slow cluster looks dead (the producer given up, 503s, records sent twice). So the
probe keeps a metadata client of its own, asks every broker it knows at once (one frozen broker,
its connection open and nothing answered, is not a cluster that does not answer), and only
``misses`` probes in a row that no broker answered, each given ``timeout`` seconds, make Kafka
unreachable: one slow answer is not a dead broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from audit_common.kafka_connection import KafkaConnection
from audit_common.resource import AsyncResource

_BOOTSTRAP_FIRST_DELAY_S = 0.25
_BOOTSTRAP_MAX_DELAY_S = 5.0


class StallProbe(AsyncResource):
    """Owned by ``relay.kafka.publisher.KafkaPublisher``, started and stopped with it.

    ``unreachable()`` is awaited by every request whose acks are late; concurrent callers share
    one round of probes, and a new round starts at most once per ``interval`` seconds.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        *,
        timeout: float,
        misses: int,
        interval: float,
        ask: Callable[[AIOKafkaClient], Awaitable[object]] | None = None,
    ) -> None:
        self._connection = connection
        self._timeout = timeout
        self._misses = misses
        self._interval = interval
        self._ask = ask or _any_broker_answers
        self._client: AIOKafkaClient | None = None
        self._bootstrapping: asyncio.Task[None] | None = None
        self._round: asyncio.Task[str | None] | None = None
        self._verdict: str | None = None
        self._ended = -interval

    async def start(self) -> None:
        if self._client is None:
            self._client = AIOKafkaClient(
                **self._connection.client_kwargs(),
                request_timeout_ms=int(self._timeout * 1000) + 1000,
            )
            self._bootstrapping = asyncio.create_task(self._bootstrap(self._client))

    async def _bootstrap(self, client: AIOKafkaClient) -> None:
        """Learn the brokers in the background from start on, without the probe's timeout: the
        relay starts while Kafka may be down, and a bootstrap first tried within a probe's
        timeout, during a stall, tries the addresses one after another: a frozen first one made
        every probe miss. A probe before it is done still bootstraps itself (fails fast while
        Kafka is down)."""
        delay = _BOOTSTRAP_FIRST_DELAY_S
        while True:
            with contextlib.suppress(KafkaError, OSError):
                await client.bootstrap()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BOOTSTRAP_MAX_DELAY_S)

    async def stop(self) -> None:
        if self._bootstrapping is not None:
            self._bootstrapping.cancel()
            await asyncio.gather(self._bootstrapping, return_exceptions=True)
            self._bootstrapping = None
        if self._round is not None:
            self._round.cancel()
            await asyncio.gather(self._round, return_exceptions=True)
            self._round = None
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def unreachable(self) -> str | None:
        """Why no broker answers (``misses`` probes in a row went unanswered), or None."""
        if self._round is None:
            if time.monotonic() - self._ended < self._interval:
                return self._verdict
            self._round = asyncio.create_task(self._probe_round())
        return await asyncio.shield(self._round)

    async def _probe_round(self) -> str | None:
        try:
            for _ in range(self._misses):
                error = await self._probe_once()
                if error is None:
                    self._verdict = None
                    return None
            self._verdict = f"no broker answered {self._misses} probes in a row ({error})"
            return self._verdict
        finally:
            self._round, self._ended = None, time.monotonic()

    async def _probe_once(self) -> str | None:
        client = self._client
        if client is None:
            return "stopped"
        try:
            async with asyncio.timeout(self._timeout):
                if not client.cluster.brokers():
                    await client.bootstrap()  # raises KafkaConnectionError when none answers
                await self._ask(client)
        except (KafkaError, OSError, TimeoutError) as exc:
            return str(exc) or type(exc).__name__
        return None


async def _any_broker_answers(client: AIOKafkaClient) -> object:
    """The first answer of any known broker to a metadata request naming no topic (the
    cheapest request every broker answers itself). ``fetch_all_metadata`` asks one broker after
    another and would spend the whole probe waiting on a frozen one. Raises
    KafkaConnectionError when none answers; cancelled by the probe's timeout."""
    asks = [
        asyncio.ensure_future(client.send(broker.nodeId, MetadataRequest([])))
        for broker in client.cluster.brokers()
    ]
    try:
        for answer in asyncio.as_completed(asks):
            with contextlib.suppress(KafkaError, OSError):
                return await answer
    finally:
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)
    raise KafkaConnectionError("no broker answered")
