"""Who may post audit events: bearer tokens, client certificates, or anyone with ``--insecure``.

The tokens are those of the apiserver's webhook kubeconfig (``token``/``tokenFile``): the
``--token-file`` holds lines ``token,cluster-name``, and the cluster of the token stamps the
events, so one relay serves many clusters. Client certificates are verified against
``--client-ca`` in the TLS handshake (relay.edge.tls); here their presence and, optionally, their
common name are checked. Every refusal is the same 401, whatever the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from audit_common.errors import ConfigError, Unauthorized
from audit_common.options import EnvArgumentParser

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
# The cluster the authenticated client posts for: ``request[CLUSTER]`` in every handler.
CLUSTER = web.RequestKey("cluster", str)
_CLUSTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces, as HTTP headers carry


@dataclass(frozen=True)
class AuthSettings:
    """How requests to the webhook path are authenticated."""

    token_file: str | None = None
    require_client_cert: bool = False
    allowed_client_cns: frozenset[str] = field(default_factory=frozenset)


def add_auth_arguments(parser: EnvArgumentParser) -> None:
    """Add the client authentication flags of ``audit-relay``."""
    add = parser.add_option
    add(
        "--token-file",
        help="file of bearer tokens, one 'token,cluster-name' a line ('#' comments); the "
        "cluster of the token stamps the events; re-read when it changes",
    )
    add(
        "--allowed-client-cn",
        action="append",
        metavar="CN",
        help="accept only client certificates with this common name (needs --client-ca)",
    )


def auth_settings_from_args(args: Any, *, tls: bool, client_ca: bool) -> AuthSettings:
    """Build and check the settings; ``tls``/``client_ca`` say what relay.edge.tls serves with.

    Without ``--insecure`` the relay must serve TLS and authenticate clients (a token file or
    client certificates): the apiserver sends its credentials only to an https server. Raises
    ConfigError otherwise, or when the token file is wrong; logs a warning for ``--insecure``.
    """
    if args.allowed_client_cn and not client_ca:
        raise ConfigError("--allowed-client-cn needs --client-ca")
    settings = AuthSettings(
        token_file=args.token_file,
        require_client_cert=client_ca,
        allowed_client_cns=frozenset(args.allowed_client_cn),
    )
    if settings.token_file:
        TokenFile(settings.token_file)  # fail at start, with the line number, not per request
    authenticates = bool(settings.token_file or client_ca)
    if args.insecure:
        if not tls or not authenticates:
            log.warning(
                "--insecure: serving %s %s; anyone who reaches the port can post audit events",
                "HTTPS" if tls else "plain HTTP",
                "with client authentication" if authenticates else "without client authentication",
            )
    elif not (tls and authenticates):
        raise ConfigError(
            "refusing to serve audit events without TLS (--tls-cert, --tls-key) and client "
            "authentication (--token-file and/or --client-ca); pass --insecure to allow it"
        )
    return settings


@dataclass(frozen=True)
class _Token:
    digest: bytes = field(repr=False)
    cluster: str


def parse_tokens(text: str, path: str) -> tuple[_Token, ...]:
    """The tokens of a token file. Raises ConfigError naming the line, never showing a token."""
    tokens: list[_Token] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 2:
            raise ConfigError(f"{path}:{number}: expected 'token,cluster-name'")
        token, cluster = parts
        if not _TOKEN.fullmatch(token) or len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{path}:{number}: the token must be at least {MIN_TOKEN_LENGTH} printable "
                "ASCII characters without spaces"
            )
        if not _CLUSTER.fullmatch(cluster):
            raise ConfigError(f"{path}:{number}: cluster name {cluster!r} is not a DNS-like name")
        digest = _digest(token)
        if any(hmac.compare_digest(digest, known.digest) for known in tokens):
            raise ConfigError(f"{path}:{number}: the same token is on an earlier line")
        tokens.append(_Token(digest, cluster))
    if not tokens:
        raise ConfigError(f"{path}: no tokens")
    return tuple(tokens)


def _digest(token: str) -> bytes:
    # Tokens are compared by their SHA-256, so that every comparison is of 32 bytes: the time it
    # takes tells nothing about the length or the content of a known token.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenFile:
    """The tokens of ``--token-file``, re-read when the file changes.

    The constructor raises ConfigError when the file cannot be read or is wrong. Later, a file
    that cannot be read or is wrong is logged once and the tokens read before are kept.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp = self._stat()
        self._tokens = self._read()
        self._failed_stamp: tuple[int, int, int] | None = None

    def cluster_for(self, token: str) -> str | None:
        """The cluster of ``token``, or None; compares with every known token in constant time."""
        self._refresh()
        digest = _digest(token)
        cluster = None
        for known in self._tokens:
            if hmac.compare_digest(digest, known.digest):
                cluster = known.cluster
        return cluster

    def _refresh(self) -> None:
        stamp = self._stat()
        if stamp in (self._stamp, self._failed_stamp):
            return
        try:
            tokens = self._read()
        except ConfigError as exc:
            log.error("keeping the tokens read before: %s", exc)
            self._failed_stamp = stamp
            return
        self._tokens, self._stamp, self._failed_stamp = tokens, stamp, None
        log.info("re-read %s: %d tokens", self.path, len(tokens))

    def _stat(self) -> tuple[int, int, int]:
        try:
            status = os.stat(self.path)
        except OSError:
            return (-1, -1, -1)  # read() says why
        return status.st_mtime_ns, status.st_size, status.st_ino

    def _read(self) -> tuple[_Token, ...]:
        try:
            with open(self.path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file: cannot read {self.path}: {exc}") from exc
        return parse_tokens(text, self.path)


def common_names(peercert: dict[str, Any]) -> set[str]:
    """The commonName values of a certificate's subject, as ``SSLSocket.getpeercert()`` gives it."""
    return {
        value for rdn in peercert.get("subject", ()) for name, value in rdn if name == "commonName"
    }


class Authenticator:
    """Decides which cluster, if any, a request comes from.

    The middleware of ``auth_middleware`` calls ``authenticate`` for every request outside the
    public paths, before its body is read.
    """

    def __init__(self, settings: AuthSettings, default_cluster: str) -> None:
        self.settings = settings
        self.default_cluster = default_cluster
        self._tokens = TokenFile(settings.token_file) if settings.token_file else None

    def authenticate(self, request: web.BaseRequest) -> str:
        """The cluster to stamp the request's events with. Raises Unauthorized with the reason."""
        if self.settings.require_client_cert:
            transport = request.transport
            peercert = transport.get_extra_info("peercert") if transport else None
            # Only a certificate the handshake verified against --client-ca is here.
            if not peercert:
                raise Unauthorized("no client certificate")
            allowed = self.settings.allowed_client_cns
            if allowed and not common_names(peercert) & allowed:
                raise Unauthorized("client certificate common name not allowed")
        if self._tokens is None:
            return self.default_cluster
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("no bearer token")
        cluster = self._tokens.cluster_for(token.strip())
        if cluster is None:
            raise Unauthorized("unknown bearer token")
        return cluster


def auth_middleware(
    authenticator: Authenticator,
    *,
    public_paths: Iterable[str],
    on_failure: Callable[[str], None] = lambda reason: None,
) -> Middleware:
    """An aiohttp middleware that sets ``request[CLUSTER]`` or answers 401.

    ``public_paths`` (health and metrics) are served to anyone. ``on_failure`` gets the reason
    of each refusal (for a metric); the client only ever gets ``{"error": "unauthorized"}``.
    """
    public = frozenset(public_paths)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        try:
            request[CLUSTER] = authenticator.authenticate(request)
        except Unauthorized as exc:
            on_failure(str(exc))
            log.debug("refused %s from %s: %s", request.path, request.remote, exc)
            response = web.json_response(
                {"error": "unauthorized"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="audit-relay"'},
            )
            # The body is not read; the connection is not kept for another try.
            response.force_close()
            return response
        return await handler(request)

    return middleware
