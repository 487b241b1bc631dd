"""``--sink http``: POST each batch to a URL (a SIEM, Elasticsearch/OpenSearch, Splunk HEC).

``flush`` returns only after a 2xx, so the runner commits no offset for a batch the server has
not taken. 5xx, 408, 429 and connection failures raise SinkError: the runner retries the batch
with exponential backoff, and the next POST waits for the server's ``Retry-After`` first.
400, 413 and 422 refuse the body itself (an event too large, a value the server will not
take) and raise BatchRefused: the runner posts the events one at a time and dead-letters each
one refused alone. Other answers (401, 403, 404, 3xx) raise ConfigError: the consumer stops,
with nothing committed, until an operator fixes the URL or credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Self

import aiohttp
from yarl import URL

from audit_common.errors import ConfigError, SinkError
from audit_common.options import EnvArgumentParser, positive_float
from audit_common.secrets import read_secret_file
from consumers.events import ConsumedEvent
from consumers.sinks.base import BatchRefused, EventsRefused, Sink
from consumers.sinks.http_formats import (
    CONTENT_TYPES,
    FORMATS,
    BodyOptions,
    encode,
    refused_documents,
)

log = logging.getLogger(__name__)

RETRIABLE_STATUSES = frozenset({408, 429})  # and every 5xx
# The server refuses this body itself; sent again it is refused again.
REFUSED_STATUSES = frozenset({400, 413, 422})
_DEFAULT_SCHEMES = {"splunk-hec": "Splunk"}


@dataclass(frozen=True)
class HttpSettings:
    url: str = field(repr=False)  # may carry credentials; logs show ``target``
    format: str = "ndjson"
    body: BodyOptions = field(default_factory=BodyOptions)
    gzip: bool = False
    timeout: float = 30.0
    retry_after_max: float = 60.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    authorization: str | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        """The URL without credentials nor query string (which may hold a token), for logs."""
        return str(URL(self.url).with_user(None).with_query(None))


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds that a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


class HttpForwardSink(Sink):
    """Buffers on ``write``; ``flush`` sends the buffer as one POST and returns after a 2xx.

    A failed flush drops the buffer: the runner writes the same batch again. Elasticsearch
    documents get ids made from the event's digest, so a batch sent twice is stored once.
    """

    name = "http"

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._pending: list[ConsumedEvent] = []
        self._not_before = 0.0  # monotonic time before which the server asked not to retry

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        add = parser.add_option
        add("--http-url", metavar="URL", help="where the http sink POSTs batches")
        add("--http-format", choices=FORMATS, default="ndjson", help="request body format")
        add("--http-index", help="index: Elasticsearch _index, or the Splunk HEC index")
        add("--http-sourcetype", default="kube:apiserver:audit", help="Splunk HEC sourcetype")
        add("--http-token-file", metavar="FILE", help="file holding a token for Authorization")
        add(
            "--http-auth-scheme",
            help="Authorization scheme of --http-token-file (default: Bearer; Splunk for "
            "splunk-hec; ApiKey for an Elasticsearch API key)",
        )
        add("--http-basic-user", help="user for basic authentication")
        add("--http-basic-password-file", metavar="FILE", help="file holding its password")
        add("--http-ca-file", metavar="FILE", help="CA bundle that signs the server certificate")
        add("--http-cert-file", metavar="FILE", help="client certificate (PEM) for mutual TLS")
        add("--http-key-file", metavar="FILE", help="private key (PEM) of --http-cert-file")
        add("--http-gzip", action="store_true", help="send bodies gzip-compressed")
        add("--http-timeout", type=positive_float, default=30.0, help="seconds for one POST")
        add(
            "--http-retry-after-max",
            type=positive_float,
            default=60.0,
            help="longest Retry-After wait honoured (bounds how late SIGTERM is noticed)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        if not args.http_url:
            raise ConfigError("--http-url (or AUDIT_CONSUMER_HTTP_URL) is required")
        url = URL(args.http_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"--http-url must be an http:// or https:// URL, got {url.scheme}:")
        if args.http_token_file and args.http_basic_user:
            raise ConfigError("--http-token-file and --http-basic-user exclude each other")
        if url.user is not None and (args.http_token_file or args.http_basic_user):
            # aiohttp would refuse the POST (two Authorization sources) mid-run.
            given = "--http-token-file" if args.http_token_file else "--http-basic-user"
            raise ConfigError(
                f"--http-url carries credentials (user@host) and {given} gives others: "
                "keep one (the file keeps the secret out of the URL)"
            )
        if (args.http_cert_file is None) != (args.http_key_file is None):
            raise ConfigError("--http-cert-file and --http-key-file go together")
        authorization = None
        if args.http_token_file:
            token = read_secret_file(args.http_token_file, "--http-token-file")
            scheme = args.http_auth_scheme or _DEFAULT_SCHEMES.get(args.http_format, "Bearer")
            authorization = f"{scheme} {token}"
        elif args.http_basic_user:
            if not args.http_basic_password_file:
                raise ConfigError("--http-basic-user needs --http-basic-password-file")
            password = read_secret_file(args.http_basic_password_file, "--http-basic-password-file")
            credentials = f"{args.http_basic_user}:{password}".encode()
            authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        sink = cls(
            HttpSettings(
                url=args.http_url,
                format=args.http_format,
                body=BodyOptions(args.http_index, args.http_sourcetype),
                gzip=args.http_gzip,
                timeout=args.http_timeout,
                retry_after_max=args.http_retry_after_max,
                ca_file=args.http_ca_file,
                cert_file=args.http_cert_file,
                key_file=args.http_key_file,
                authorization=authorization,
            )
        )
        sink._ssl_context()  # TLS files that cannot be loaded stop the start, not the first POST
        return sink

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.settings.ca_file)
            if self.settings.cert_file:
                context.load_cert_chain(self.settings.cert_file, self.settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the http sink's TLS files: {exc}") from exc
        return context

    async def open(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=1)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        log.info("forwarding %s batches to %s", self.settings.format, self.settings.target)

    async def write(self, events: Sequence[ConsumedEvent]) -> None:
        self._pending.extend(events)

    async def flush(self) -> None:
        events, self._pending = self._pending, []
        if not events:
            return
        assert self._session is not None, "flush before open"
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # the server's Retry-After
        body = encode(self.settings.format, events, self.settings.body)
        headers = {"Content-Type": CONTENT_TYPES[self.settings.format]}
        if self.settings.gzip:
            body = await asyncio.to_thread(gzip.compress, body, 6)
            headers["Content-Encoding"] = "gzip"
        if self.settings.authorization:
            headers["Authorization"] = self.settings.authorization
        try:
            async with self._session.post(
                self.settings.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                answer = await response.read()
                self._check(response, answer)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ConfigError(f"{self.settings.target}: certificate refused: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise SinkError(f"cannot POST to {self.settings.target}: {reason}") from exc
        refused = refused_documents(self.settings.format, answer)
        if refused:
            raise EventsRefused([(events[position], reason) for position, reason in refused])

    def _check(self, response: aiohttp.ClientResponse, answer: bytes) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        snippet = answer[:300].decode("utf-8", errors="replace").strip()
        message = f"{self.settings.target} answered {status}: {snippet}"
        if status in RETRIABLE_STATUSES or status >= 500:
            delay = retry_after_seconds(response.headers.get("Retry-After"), time.time())
            if delay is not None:
                delay = min(delay, self.settings.retry_after_max)
                self._not_before = time.monotonic() + delay
                message += f" (Retry-After: next POST in {delay:.0f}s at the earliest)"
            raise SinkError(message)
        if status in REFUSED_STATUSES:
            raise BatchRefused(message)
        raise ConfigError(message)

    async def close(self) -> None:
        self._pending.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
