"""``--sink alerts``: evaluate detection rules (Falco's, ``k8s_audit`` source) on every event and
deliver each alert to a Kafka topic and/or an HTTP endpoint (Falcosidekick, any webhook).

An alert is Falco's JSON output (``Alert.to_json()``). On the topic it is a record keyed by the
rule's name, with the ``schema-version``, the event's ``cluster`` and the alert's ``priority``
in headers (``audit_common/schemas/v1/alert-record.schema.json``); to the URL it is the body of
one POST per alert, ``Content-Type: application/json``.

Delivery: ``flush`` returns only when every alert of the written events is acknowledged by
Kafka (acks=all) and answered 2xx by the URL, so the runner commits an event's offset only
after its alerts are delivered; a failure raises SinkError and the runner evaluates and sends
the batch again (at least once: an alert may arrive twice, never not at all). The producer is
replaced after a failed batch and the alerts it did not acknowledge go out on the new one
(``audit_common.kafka_producer``). The URL's
answers: 5xx, 408, 429 and connection failures are retried that way; 400, 413 and 422 refuse
that one alert for good, and its event goes to the dead-letter topic (``EventsRefused``) while
the rest is committed; any other answer (401, 403, 404, 3xx: a wrong URL or credentials) stops
the consumer with ConfigError, nothing committed, as ``--sink http`` does.

Bounds: each ``%field`` value in an alert is cut to ``--alerts-field-max-chars`` and the alert
to ``--alerts-max-bytes`` (``consumers.rules.bounds``, a visible marker where cut). The alerts
topic is created at open when missing, as the relay creates its topics, and the producer's
records are sized to its ``max.message.bytes`` (``consumers.producers``). An alert Kafka
refuses for itself (too large, ``audit_common.kafka_producer.refused_for_itself``) refuses its
event for good: it goes to the dead-letter topic and the rest of the batch is committed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Self

import aiohttp
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from audit_common.errors import ConfigError, KafkaUnavailable, SinkError
from audit_common.headers import CLUSTER, SCHEMA_VERSION, SCHEMA_VERSION_HEADER
from audit_common.kafka_connection import KafkaConnection, kafka_connection_from_args
from audit_common.kafka_producer import KafkaRecord, RecoveringProducer
from audit_common.options import EnvArgumentParser, positive_float, positive_int
from consumers.events import ConsumedEvent
from consumers.producers import NewTopicSpec, producer_for, topic_limit
from consumers.rules.options import PRIORITY_NAMES, RULES_HELP, load, priority_arg
from consumers.rules.ruleset import Alert, RuleSet
from consumers.sinks.alerts_event import for_rules
from consumers.sinks.base import REPEATING, EventsRefused, Sink, failure_text

log = logging.getLogger(__name__)

PRIORITY_HEADER = "priority"
DEFAULT_TOPIC = "k8s-audit.alerts"
# The receiver refuses this alert itself (its body); sending it again will not help.
REFUSED_STATUSES = frozenset({400, 413, 422})
RETRIABLE_STATUSES = frozenset({408, 429})  # and every 5xx
# How long one batch's alerts may take to be acknowledged, producer replacements included; and
# closing a producer given up (its last requests in flight).
_KAFKA_S = 30.0
# Room for the record's key, headers and batch header within the topic's max.message.bytes.
_RECORD_OVERHEAD = 1024


@dataclass(frozen=True)
class AlertsSettings:
    """Where alerts go; built by ``AlertsSink.from_args``."""

    topic: str | None = DEFAULT_TOPIC
    url: str | None = field(default=None, repr=False)  # may carry credentials
    kafka: KafkaConnection = field(default_factory=KafkaConnection)
    client_id: str = "audit-consumer"
    url_concurrency: int = 8
    url_timeout: float = 10.0
    field_max_chars: int = 2048
    alert_max_bytes: int = 65536
    new_topic: NewTopicSpec = field(default_factory=lambda: NewTopicSpec(3, 1))

    @property
    def url_target(self) -> str:
        """The URL without credentials nor query string, for logs."""
        return str(URL(self.url).with_user(None).with_query(None)) if self.url else "-"


class _Refused(Exception):
    """One alert the URL refused for good (REFUSED_STATUSES)."""


@dataclass
class _Pending:
    """What the written events still wait for: each alert's record for the topic and each
    POST, with the event it came from."""

    records: list[tuple[ConsumedEvent, KafkaRecord]] = field(default_factory=list)
    sends: list[tuple[ConsumedEvent, asyncio.Future[Any]]] = field(default_factory=list)
    alerts: Tally[tuple[str, str]] = field(default_factory=Tally)
    truncated: int = 0


class AlertsSink(Sink):
    """Evaluates ``rules`` on each event in ``write``; ``flush`` awaits every delivery."""

    name = "alerts"

    def __init__(self, settings: AlertsSettings, rules: RuleSet) -> None:
        self.settings = settings
        self.rules = rules
        self._producer: RecoveringProducer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.url_concurrency)
        self._pending = _Pending()
        self._alerts_total: Counter | None = None
        self._truncated: Counter | None = None
        self._alert_limit = settings.alert_max_bytes  # and within the topic's, read at open

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        add = parser.add_option
        add(
            "--rules",
            action="append",
            metavar="FILE",
            help="alerts sink: " + RULES_HELP,
        )
        add(
            "--min-priority",
            type=priority_arg,
            default="debug",
            metavar="PRIORITY",
            help=f"alerts sink: skip rules below this priority ({', '.join(PRIORITY_NAMES)})",
        )
        add(
            "--alerts-topic",
            default=DEFAULT_TOPIC,
            help="Kafka topic the alerts sink writes alerts to, keyed by rule; empty: none",
        )
        add("--no-alerts-topic", action="store_true", help="send alerts to --alerts-url only")
        add(
            "--alerts-url",
            metavar="URL",
            help="also POST each alert (Falco's JSON output) to this URL, e.g. Falcosidekick",
        )
        add(
            "--alerts-url-concurrency",
            type=positive_int,
            default=8,
            help="most alert POSTs in flight at once",
        )
        add(
            "--alerts-url-timeout",
            type=positive_float,
            default=10.0,
            help="seconds for one alert POST",
        )
        add(
            "--alerts-field-max-chars",
            type=positive_int,
            default=2048,
            metavar="N",
            help="longest %%field value in an alert's output and output_fields; longer ones are "
            "cut, with a '...[truncated: ...]' marker",
        )
        add(
            "--alerts-max-bytes",
            type=positive_int,
            default=65536,
            metavar="N",
            help="largest alert (its JSON); a larger one has its output and fields cut to fit",
        )
        add(
            "--alerts-topic-partitions",
            type=positive_int,
            default=3,
            help="partitions of the alerts topic when the alerts sink creates it",
        )
        add(
            "--alerts-topic-replication-factor",
            type=positive_int,
            default=1,
            help="replication factor of the alerts topic when the alerts sink creates it (3 in "
            "production); it gets min.insync.replicas = min(2, this)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """Check the flags and load the rules files. Raises ConfigError (RulesError for a
        rules file that cannot be loaded)."""
        topic = None if args.no_alerts_topic or not args.alerts_topic else args.alerts_topic
        if args.alerts_url:
            url = URL(args.alerts_url)
            if url.scheme not in ("http", "https") or not url.host:
                raise ConfigError(
                    f"--alerts-url must be an http:// or https:// URL, got {url.scheme}:"
                )
        if topic is None and not args.alerts_url:
            raise ConfigError("the alerts sink needs --alerts-topic, --alerts-url or both")
        if topic in (args.topic, args.dead_letter_topic):
            # Alerts on the events topic would be consumed as events, and alert on themselves.
            raise ConfigError(f"--alerts-topic {topic} is the topic of events or dead letters")
        settings = AlertsSettings(
            topic=topic,
            url=args.alerts_url or None,
            kafka=kafka_connection_from_args(args),
            client_id=args.client_id,
            url_concurrency=args.alerts_url_concurrency,
            url_timeout=args.alerts_url_timeout,
            field_max_chars=args.alerts_field_max_chars,
            alert_max_bytes=args.alerts_max_bytes,
            new_topic=NewTopicSpec(
                args.alerts_topic_partitions, args.alerts_topic_replication_factor
            ),
        )
        return cls(settings, load(args.rules, args.min_priority))

    def register_metrics(self, registry: CollectorRegistry) -> None:
        self._alerts_total = Counter(
            "audit_consumer_alerts",
            "Alerts raised by the rules, counted when their batch is flushed",
            ["rule", "priority"],
            registry=registry,
        )
        self._truncated = Counter(
            "audit_consumer_alerts_truncated",
            "Alerts with a value or the whole cut to --alerts-field-max-chars/--alerts-max-bytes, "
            "counted when their batch is flushed",
            registry=registry,
        )

    async def open(self) -> None:
        await self._start_producer()
        if self.settings.url is not None and self._session is None:
            connector = aiohttp.TCPConnector(limit=self.settings.url_concurrency)
            timeout = aiohttp.ClientTimeout(total=self.settings.url_timeout)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        log.info(
            "alerts to topic %s and URL %s",
            self.settings.topic or "-",
            self.settings.url_target,
        )

    async def _start_producer(self) -> None:
        """Connect the producer of the alerts topic, if there is one. Raises SinkError while
        Kafka is out of reach (the runner opens the sink again)."""
        topic = self.settings.topic
        if topic is None:
            return
        if self._producer is None:
            kafka, client_id = self.settings.kafka, self.settings.client_id
            try:
                limit = await topic_limit(kafka, topic, client_id, self.settings.new_topic)
            except KafkaError as exc:
                raise SinkError(
                    "cannot connect the alerts producer to Kafka (to create or describe "
                    f"{topic}): {exc}"
                ) from exc
            self._alert_limit = min(self.settings.alert_max_bytes, limit - _RECORD_OVERHEAD)
            self._producer = RecoveringProducer(
                partial(producer_for, kafka, client_id, limit),
                name="alerts producer",
                close_timeout=_KAFKA_S,
            )
        await self._producer.start()
        try:
            async with asyncio.timeout(_KAFKA_S):
                await self._producer.wait()
        except (KafkaUnavailable, TimeoutError) as exc:
            reason = str(exc) or "no answer in time"
            raise SinkError(f"cannot connect the alerts producer to Kafka: {reason}") from exc

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        """Evaluate the rules and send each alert; raises EventsRefused, once the rest is sent,
        for events whose alerts cannot be built or are too large even when cut."""
        refused: list[tuple[ConsumedEvent, str]] = []
        try:
            for event in events:
                try:
                    alerts = self.rules.evaluate(for_rules(event), self.settings.field_max_chars)
                    bodies = [(alert, self._bounded(alert)) for alert in alerts]
                except REPEATING as exc:
                    refused.append((event, f"cannot evaluate the rules: {failure_text(exc)}"))
                    continue
                for alert, body in bodies:
                    problem = await self._send(event, alert, body)
                    if problem is not None:
                        refused.append((event, problem))
                        break
        except BaseException:
            self._abandon()
            raise
        if refused:
            raise EventsRefused(refused)

    def _bounded(self, alert: Alert) -> bytes:
        """The alert's JSON within the alert limit (cut where it is over), counted when cut."""
        body, cut = alert.bounded_json(self._alert_limit)
        self._pending.truncated += cut or alert.truncated
        return body

    async def _send(self, event: ConsumedEvent, alert: Alert, body: bytes) -> str | None:
        """Queue one alert for ``flush``; the reason it is refused for good, or None."""
        if len(body) > self._alert_limit:
            return f"alert of rule {alert.rule!r} is {len(body)} bytes even cut"
        sends = self._pending.sends
        if self.settings.topic is not None:
            headers = [(SCHEMA_VERSION_HEADER, SCHEMA_VERSION)]
            if event.cluster is not None:
                headers.append((CLUSTER, event.cluster.encode()))
            headers.append((PRIORITY_HEADER, alert.priority.label.encode()))
            record = KafkaRecord(self.settings.topic, body, alert.rule.encode(), headers)
            self._pending.records.append((event, record))
        if self._session is not None:
            sends.append((event, asyncio.ensure_future(self._post(body))))
        self._pending.alerts[alert.rule, alert.priority.label] += 1
        return None

    async def _post(self, body: bytes) -> None:
        assert self._session is not None and self.settings.url is not None
        target = self.settings.url_target
        async with self._slots:
            try:
                async with self._session.post(
                    self.settings.url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    allow_redirects=False,
                ) as response:
                    answer = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                raise SinkError(f"cannot POST an alert to {target}: {reason}") from exc
        status = response.status
        if 200 <= status < 300:
            return
        message = f"{target} answered {status}: {answer[:300].decode('utf-8', 'replace').strip()}"
        if status in RETRIABLE_STATUSES or status >= 500:
            raise SinkError(message)
        if status in REFUSED_STATUSES:
            raise _Refused(message)
        raise ConfigError(message)

    async def flush(self) -> None:
        """Wait for every alert of the written events to be delivered. Raises SinkError when
        one was not (the runner sends the batch again), EventsRefused when Kafka or the URL
        refused some alerts for good, ConfigError when the URL refuses them all (credentials)."""
        pending, self._pending = self._pending, _Pending()
        refused: dict[int, tuple[ConsumedEvent, str]] = {}
        try:
            if pending.records:
                assert self._producer is not None
                records = [record for _, record in pending.records]
                kafka = await self._producer.send_all(records, _KAFKA_S)
                for (event, _), error in zip(pending.records, kafka, strict=True):
                    if error is not None:
                        refused.setdefault(id(event), (event, f"Kafka refused an alert: {error}"))
        except KafkaUnavailable as exc:
            self._abandon(pending)
            raise SinkError(f"Kafka did not take the alerts: {exc}") from exc
        results = await asyncio.gather(*(sent for _, sent in pending.sends), return_exceptions=True)
        for (event, _), result in zip(pending.sends, results, strict=True):
            if isinstance(result, _Refused):
                refused.setdefault(id(event), (event, f"alert refused: {result}"))
            elif isinstance(result, BaseException):
                raise result
        if self._alerts_total is not None:
            for (rule, priority), count in pending.alerts.items():
                self._alerts_total.labels(rule, priority).inc(count)
        if self._truncated is not None:
            self._truncated.inc(pending.truncated)
        log.debug("delivered %d alerts", sum(pending.alerts.values()))
        if refused:
            raise EventsRefused(list(refused.values()))

    def _abandon(self, pending: _Pending | None = None) -> None:
        """Drop the sends of a failed batch: the runner writes the whole batch again."""
        if pending is None:
            pending, self._pending = self._pending, _Pending()
        for _, sent in pending.sends:
            if sent.done() and not sent.cancelled():
                sent.exception()  # retrieved and dropped: the batch is sent again whole
            else:
                sent.cancel()

    async def close(self) -> None:
        self._abandon()
        producer, self._producer = self._producer, None
        session, self._session = self._session, None
        if producer is not None:
            await producer.stop()  # nothing is left to send: it returns at once
        if session is not None:
            await session.close()
