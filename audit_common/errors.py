"""The error hierarchy of kube-audit-relay, shared by the relay and the consumers.

Each error says whether trying again later can succeed (``retriable``). Foreign exceptions
(aiokafka, OSError, orjson) are translated into these at the module that calls the foreign
library, with ``raise ... from exc``; the relay maps them to HTTP statuses in one place
(``relay.edge.app.status_for``).
"""

from __future__ import annotations


class AuditRelayError(Exception):
    """Base of every error this project raises on purpose."""

    retriable: bool = False


class ConfigError(AuditRelayError):
    """A flag, environment variable or file named by one is wrong; raised at start-up."""


class RulesError(ConfigError):
    """A detection rules file (Falco's rules language) that cannot be loaded: the message names
    the file, the item and the problem."""


class BadRequest(AuditRelayError):
    """The request body is not an audit EventList or Event; sending it again will not help."""


class InvalidEvent(AuditRelayError):
    """A consumed Kafka record that is not an audit event as the relay publishes one; reading it
    again will not help (the consumers dead-letter it)."""


class UnsupportedEncoding(BadRequest):
    """A Content-Encoding the relay does not decode."""


class RequestTimeout(BadRequest):
    """The client did not send its body within ``--client-timeout``."""


class PayloadTooLarge(AuditRelayError):
    """The request body is over the configured limit."""


class Unauthorized(AuditRelayError):
    """No valid credentials; deliberately carries no detail for the client."""


class KafkaUnavailable(AuditRelayError):
    """Kafka did not acknowledge in time, or cannot be reached; try again later."""

    retriable = True


class Overloaded(AuditRelayError):
    """Too much in flight (memory bound, or a full spool); try again later."""

    retriable = True


class SinkError(AuditRelayError):
    """A consumer's sink failed to write or flush; the batch is retried, never skipped."""

    retriable = True


class ArchiveUnavailable(SinkError):
    """The archive's object store did not answer, or refused a request (credentials, a missing
    bucket); the archive sink retries, ``archive verify`` and ``replay`` report it and exit."""


class SourceError(AuditRelayError):
    """An audit source (``relay.sources``) cannot read where it reads from, or cannot keep its
    checkpoint; ``audit-source`` stops with it rather than skip events."""
