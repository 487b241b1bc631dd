"""How the postgres sink and ``audit-consumer query`` reach PostgreSQL, and what its errors mean.

The DSN may carry a password, so neither it nor the password ever appears in a repr or a log
line: logs name the server by ``PostgresConnection.target``. asyncpg's own exceptions are
translated here into ``SinkError`` (try again: the server is down, restarting, overloaded) or
``ConfigError`` (it will not work until an operator changes something).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import asyncpg

from audit_common.errors import AuditRelayError, ConfigError, SinkError
from audit_common.options import EnvArgumentParser, positive_float
from audit_common.secrets import read_secret_file

# What a call into asyncpg may raise when the server or the network fails.
POSTGRES_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

# SQLSTATE classes that retrying cannot fix: 28 bad credentials, 3D no such database,
# 42 missing privileges or a schema this program does not know.
_CONFIG_CLASSES = ("28", "3D", "42")


@dataclass(frozen=True)
class PostgresConnection:
    """Where the audit store is; ``dsn`` and ``password`` are never shown."""

    dsn: str = field(repr=False)
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    @property
    def target(self) -> str:
        """The DSN without its password, for logs and messages."""
        return redact_dsn(self.dsn)

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "timeout": self.timeout,
            "command_timeout": self.timeout,
            "server_settings": {"application_name": "audit-consumer"},
        }
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs

    async def connect(self) -> asyncpg.Connection:
        """One connection. Raises SinkError (unreachable) or ConfigError (refused for good)."""
        try:
            return await asyncpg.connect(self.dsn, **self._kwargs())
        except (*POSTGRES_ERRORS, ValueError) as exc:
            raise self.translate(exc, "connect to") from exc

    async def create_pool(
        self,
        size: int,
        init: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]] | None = None,
    ) -> asyncpg.Pool:
        """A pool of up to ``size`` connections, made on demand: one the server dropped is
        replaced at the next ``acquire`` (a minimum size would make asyncpg retry in the
        background, logging a traceback each time, while the server is down). ``init`` runs on
        each new connection."""
        try:
            return await asyncpg.create_pool(
                self.dsn, min_size=0, max_size=size, init=init, **self._kwargs()
            )
        except (*POSTGRES_ERRORS, ValueError) as exc:
            raise self.translate(exc, "connect to") from exc

    def translate(self, exc: BaseException, doing: str) -> AuditRelayError:
        """The project error for an asyncpg failure while ``doing`` something to the store."""
        detail = self._scrub(str(exc)) or type(exc).__name__
        message = f"cannot {doing} PostgreSQL at {self.target}: {detail}"
        if isinstance(exc, asyncpg.PostgresError):
            sqlstate = exc.sqlstate or ""
            if sqlstate[:2] in _CONFIG_CLASSES:
                return ConfigError(f"{message} (SQLSTATE {sqlstate})")
            return SinkError(message)
        if isinstance(exc, ValueError):  # a malformed DSN (asyncpg.ClientConfigurationError)
            return ConfigError(message)
        return SinkError(message)

    def _scrub(self, text: str) -> str:
        for secret in (self.password, dsn_password(self.dsn)):
            if secret:
                text = text.replace(secret, "***")
        return text


# Where libpq takes a password from a DSN: ``key=value`` form, a URL's user info, or a URL's
# query. Regular expressions rather than urlsplit, which raises on a malformed URL: the message
# about that DSN must still be shown, without its password.
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:@/?#]*:)([^@/?#]*)(?=@)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def dsn_password(dsn: str) -> str | None:
    """The password written in ``dsn`` (URL user info or query, or ``key=value``), if any."""
    if "://" in dsn:
        match = _URL_PASSWORD.match(dsn) or _QUERY_PASSWORD.search(dsn)
        return unquote(match[2]) if match else None
    match = _KEYWORD_PASSWORD.search(dsn)
    return match[2].strip("'") if match else None


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``; never raises, even for a malformed DSN."""
    if "://" in dsn:
        return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***", dsn))
    return _KEYWORD_PASSWORD.sub(r"\1***", dsn)


def add_postgres_arguments(parser: EnvArgumentParser) -> None:
    """The connection flags of ``--sink postgres`` and ``audit-consumer query``."""
    add = parser.add_option
    add(
        "--postgres-dsn",
        metavar="DSN",
        help="PostgreSQL to write to or query, e.g. postgresql://audit@db:5432/audit"
        "?sslmode=verify-full (libpq URL or key=value form; never logged)",
    )
    add(
        "--postgres-password-file",
        metavar="FILE",
        help="file whose first line is the PostgreSQL password (wins over one in the DSN)",
    )
    add(
        "--postgres-timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="longest wait to connect to PostgreSQL or for one statement",
    )


def postgres_connection_from_args(args: argparse.Namespace) -> PostgresConnection:
    """Raises ConfigError when no DSN is given or the password file cannot be read."""
    if not args.postgres_dsn:
        raise ConfigError("--postgres-dsn (or AUDIT_CONSUMER_POSTGRES_DSN) is required")
    password = None
    if args.postgres_password_file:
        password = read_secret_file(args.postgres_password_file, "--postgres-password-file")
    return PostgresConnection(args.postgres_dsn, password, args.postgres_timeout)
