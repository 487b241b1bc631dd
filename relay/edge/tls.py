"""The relay's server TLS: certificate, key and client CA from files, reloaded when they change.

A renewed certificate (cert-manager, a rotated Kubernetes Secret) is loaded into the same
``SSLContext`` the server listens with, so new connections get it without a restart. New files
are first loaded into a scratch context: a half-written pair (certificate renewed, key not yet)
is skipped and tried again on the next check, never half-applied. A CA added to the
``--client-ca`` bundle is trusted from the next check on; a CA removed from it stays trusted
until the relay restarts (OpenSSL cannot drop a CA from a live context).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass
from typing import Any

from audit_common.errors import ConfigError
from audit_common.options import EnvArgumentParser, positive_float
from audit_common.resource import AsyncResource

log = logging.getLogger(__name__)

_Stamp = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class TLSSettings:
    """Server TLS files; ``enabled`` when a certificate is given."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    reload_interval: float = 10.0

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


def add_tls_arguments(parser: EnvArgumentParser) -> None:
    """Add the server TLS flags of ``audit-relay``."""
    add = parser.add_option
    add("--tls-cert", help="server certificate chain (PEM); serve HTTPS (TLS 1.2 or later)")
    add("--tls-key", help="private key (PEM) of --tls-cert")
    add(
        "--client-ca",
        help="CA bundle (PEM) that signs client certificates; requests to the webhook path must "
        "then present a certificate it verifies",
    )
    add(
        "--tls-reload-interval",
        type=positive_float,
        default=10.0,
        help="seconds between checks of the TLS files for a renewed certificate or CA",
    )


def tls_settings_from_args(args: Any) -> TLSSettings:
    """Build the settings from parsed flags and check that the files load. Raises ConfigError."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        raise ConfigError("--client-ca needs --tls-cert: client certificates need TLS")
    settings = TLSSettings(args.tls_cert, args.tls_key, args.client_ca, args.tls_reload_interval)
    if settings.enabled:
        server_context(settings)
    return settings


def server_context(settings: TLSSettings) -> ssl.SSLContext:
    """A server context with the settings' files loaded. Raises ConfigError naming the file."""
    assert settings.cert_file is not None and settings.key_file is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, settings)
    if settings.client_ca_file:
        # OPTIONAL, not REQUIRED: a certificate that is presented is verified in the handshake,
        # and the auth middleware refuses requests without one, except on the health and
        # metrics paths, which kubelet probes and Prometheus reach without a certificate.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _load(context: ssl.SSLContext, settings: TLSSettings) -> None:
    assert settings.cert_file is not None and settings.key_file is not None
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load --tls-cert {settings.cert_file} / --tls-key {settings.key_file}: {exc}"
        ) from exc
    if settings.client_ca_file:
        try:
            context.load_verify_locations(cafile=settings.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --client-ca {settings.client_ca_file}: {exc}") from exc


def _stamp(settings: TLSSettings) -> _Stamp:
    stamps = []
    for path in (settings.cert_file, settings.key_file, settings.client_ca_file):
        if path is None:
            continue
        try:
            status = os.stat(path)
        except OSError:
            stamps.append((-1, -1, -1))
        else:
            stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
    return tuple(stamps)


class ServerTLS(AsyncResource):
    """The ``SSLContext`` the relay's server listens with, kept up to date with its files.

    ``relay.edge.app`` makes one per process when TLS is on, passes ``context`` to its site, and
    starts it to check the files every ``reload_interval`` seconds. The constructor raises
    ConfigError when the files do not load; later failures are logged and the old files kept.
    """

    def __init__(self, settings: TLSSettings) -> None:
        self.settings = settings
        self._stamp = _stamp(settings)
        self.context = server_context(settings)
        self._failed_stamp: _Stamp | None = None
        self._task: asyncio.Task[None] | None = None

    def reload_if_changed(self) -> bool:
        """Load the files into ``context`` if they changed and load; True when it reloaded."""
        stamp = _stamp(self.settings)
        if stamp == self._stamp:
            return False
        try:
            server_context(self.settings)
            _load(self.context, self.settings)
        except ConfigError as exc:
            if stamp != self._failed_stamp:
                log.error("keeping the current TLS certificate: %s", exc)
                self._failed_stamp = stamp
            return False
        self._stamp = stamp
        log.info("reloaded TLS certificate %s", self.settings.cert_file)
        return True

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="tls-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            self.reload_if_changed()
