"""How the relay and the consumers connect to Kafka: bootstrap servers, TLS and SASL.

One dataclass and one set of flags serve both programs. Secrets come from files, never from a
flag's value, and the dataclass's repr never shows them.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiokafka.helpers import create_ssl_context

from audit_common.errors import ConfigError
from audit_common.options import EnvArgumentParser
from audit_common.secrets import read_secret_file

log = logging.getLogger(__name__)

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaConnection:
    """Connection settings for every aiokafka client of a process (the password is not in repr)."""

    bootstrap: str = "127.0.0.1:9092"
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_key_password: str | None = field(default=None, repr=False)
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin).

        Raises ConfigError when a TLS file cannot be loaded.
        """
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        protocol = ("SASL_" if self.sasl_mechanism else "") + ("SSL" if self.tls else "PLAINTEXT")
        kwargs["security_protocol"] = protocol
        if self.tls:
            kwargs["ssl_context"] = self._ssl_context()
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            return create_ssl_context(  # type: ignore[no-any-return]
                cafile=self.tls_ca_file,
                certfile=self.tls_cert_file,
                keyfile=self.tls_key_file,
                password=self.tls_key_password,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load Kafka TLS files: {exc}") from exc


def add_kafka_arguments(parser: EnvArgumentParser) -> None:
    """Add the Kafka connection flags shared by ``audit-relay`` and ``audit-consumer``."""
    add = parser.add_option
    add(
        "--kafka-bootstrap",
        default="127.0.0.1:9092",
        help="Kafka bootstrap servers, comma-separated",
    )
    add("--kafka-tls", action="store_true", help="connect to Kafka with TLS")
    add("--kafka-tls-ca-file", help="CA bundle that signs the brokers' certificates")
    add("--kafka-tls-cert-file", help="client certificate (PEM) for mutual TLS")
    add("--kafka-tls-key-file", help="private key (PEM) of --kafka-tls-cert-file")
    add(
        "--kafka-tls-key-password-file",
        help="file whose first line is the password of an encrypted --kafka-tls-key-file",
    )
    add("--kafka-sasl-mechanism", choices=SASL_MECHANISMS, help="SASL mechanism, if any")
    add("--kafka-sasl-username", help="SASL user name")
    add("--kafka-sasl-password-file", help="file whose first line is the SASL password")


def kafka_connection_from_args(args: Any) -> KafkaConnection:
    """Build the connection from parsed flags; reads the password file. Raises ConfigError."""
    password = None
    if args.kafka_sasl_mechanism:
        if not args.kafka_sasl_username or not args.kafka_sasl_password_file:
            raise ConfigError(
                "--kafka-sasl-mechanism needs --kafka-sasl-username and --kafka-sasl-password-file"
            )
        password = read_secret_file(args.kafka_sasl_password_file, "--kafka-sasl-password-file")
    if (args.kafka_tls_cert_file is None) != (args.kafka_tls_key_file is None):
        raise ConfigError("--kafka-tls-cert-file and --kafka-tls-key-file go together")
    key_password = None
    if args.kafka_tls_key_password_file:
        if not args.kafka_tls_key_file:
            raise ConfigError("--kafka-tls-key-password-file needs --kafka-tls-key-file")
        key_password = read_secret_file(
            args.kafka_tls_key_password_file, "--kafka-tls-key-password-file"
        )
    tls = bool(args.kafka_tls or args.kafka_tls_ca_file or args.kafka_tls_cert_file)
    if args.kafka_sasl_mechanism == "PLAIN" and not tls:
        log.warning("SASL PLAIN without --kafka-tls sends the Kafka password in clear text")
    connection = KafkaConnection(
        bootstrap=args.kafka_bootstrap,
        tls=tls,
        tls_ca_file=args.kafka_tls_ca_file,
        tls_cert_file=args.kafka_tls_cert_file,
        tls_key_file=args.kafka_tls_key_file,
        tls_key_password=key_password,
        sasl_mechanism=args.kafka_sasl_mechanism,
        sasl_username=args.kafka_sasl_username,
        sasl_password=password,
    )
    # Load the TLS files now: a file that cannot be read is a usage error at start, not a
    # failure inside the background task that connects to Kafka.
    connection.client_kwargs()
    return connection
