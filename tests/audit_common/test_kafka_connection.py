"""Kafka client security (relay/kafka_connection.py): flags, secrets from files, real TLS.

The local broker speaks PLAINTEXT only, so TLS is checked against a TLS server made with trustme
that requires a client certificate, as a broker with ``ssl.client.auth=required`` does; SASL is
checked as far as the keyword arguments aiokafka gets (no SASL broker is started here).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
from pathlib import Path

import pytest
import trustme
from aiokafka.admin import AIOKafkaAdminClient
from cryptography.hazmat.primitives import serialization

from audit_common.errors import ConfigError
from audit_common.kafka_connection import (
    KafkaConnection,
    add_kafka_arguments,
    kafka_connection_from_args,
)
from audit_common.options import EnvArgumentParser

PASSWORD = "kafka-s3cret-pass"


def parse(*argv: str, environ: dict[str, str] | None = None) -> argparse.Namespace:
    parser = EnvArgumentParser(prog="t", env_prefix="AUDIT_RELAY", environ=environ or {})
    add_kafka_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(f"{PASSWORD}\n")
    return path


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_from_flags_with_the_password_from_a_file(mechanism: str, password_file: Path) -> None:
    connection = kafka_connection_from_args(
        parse(
            "--kafka-tls",
            "--kafka-sasl-mechanism",
            mechanism,
            "--kafka-sasl-username",
            "relay",
            "--kafka-sasl-password-file",
            str(password_file),
        )
    )
    kwargs = connection.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("relay", PASSWORD)
    assert PASSWORD not in repr(connection)


def test_sasl_and_tls_from_the_environment(password_file: Path, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    environ = {
        "AUDIT_RELAY_KAFKA_BOOTSTRAP": "broker-1:9093,broker-2:9093",
        "AUDIT_RELAY_KAFKA_TLS_CA_FILE": str(tmp_path / "ca.pem"),
        "AUDIT_RELAY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "AUDIT_RELAY_KAFKA_SASL_USERNAME": "consumer",
        "AUDIT_RELAY_KAFKA_SASL_PASSWORD_FILE": str(password_file),
    }
    connection = kafka_connection_from_args(parse(environ=environ))
    kwargs = connection.client_kwargs()
    assert kwargs["bootstrap_servers"] == "broker-1:9093,broker-2:9093"
    assert kwargs["security_protocol"] == "SASL_SSL"
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert connection.sasl_password == PASSWORD


def test_plaintext_by_default_and_plain_sasl_without_tls_warns(
    password_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert KafkaConnection().client_kwargs()["security_protocol"] == "PLAINTEXT"
    with caplog.at_level(logging.WARNING, logger="audit_common.kafka_connection"):
        connection = kafka_connection_from_args(
            parse(
                "--kafka-sasl-mechanism",
                "PLAIN",
                "--kafka-sasl-username",
                "relay",
                "--kafka-sasl-password-file",
                str(password_file),
            )
        )
    assert connection.client_kwargs()["security_protocol"] == "SASL_PLAINTEXT"
    assert "in clear text" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kafka-sasl-mechanism", "PLAIN"], "needs --kafka-sasl-username"),
        (
            [
                "--kafka-sasl-mechanism",
                "PLAIN",
                "--kafka-sasl-username",
                "u",
                "--kafka-sasl-password-file",
                "/nonexistent",
            ],
            "--kafka-sasl-password-file: cannot read /nonexistent",
        ),
        (["--kafka-tls-cert-file", "c.pem"], "go together"),
        (["--kafka-tls-key-password-file", "p"], "needs --kafka-tls-key-file"),
    ],
)
def test_wrong_combinations_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        kafka_connection_from_args(parse(*argv))


def test_an_empty_password_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    argv = ["--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "u"]
    with pytest.raises(ConfigError, match="is empty"):
        kafka_connection_from_args(
            parse(*argv, "--kafka-sasl-password-file", str(tmp_path / "empty"))
        )


def test_unloadable_tls_files_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    connection = KafkaConnection(tls=True, tls_ca_file=str(tmp_path / "bad.pem"))
    with pytest.raises(ConfigError, match="cannot load Kafka TLS files"):
        connection.client_kwargs()
    # Already while the flags are read, before anything connects.
    with pytest.raises(ConfigError, match="cannot load Kafka TLS files"):
        kafka_connection_from_args(parse("--kafka-tls-ca-file", str(tmp_path / "bad.pem")))


async def test_mutual_tls_with_an_encrypted_client_key(tmp_path: Path) -> None:
    """A real handshake: the broker side verifies the client's certificate, and vice versa."""
    broker_ca, client_ca = trustme.CA(), trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    broker_ca.issue_cert("localhost").configure_cert(server)
    client_ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    seen: list[object] = []

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peercert"))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    leaf = client_ca.issue_cert("relay", common_name="relay")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pass-123"),
    )
    (tmp_path / "client.key").write_bytes(encrypted)
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
    broker_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "key-password").write_text("key-pass-123\n")
    connection = kafka_connection_from_args(
        parse(
            "--kafka-tls-ca-file",
            str(tmp_path / "ca.pem"),
            "--kafka-tls-cert-file",
            str(tmp_path / "client.crt"),
            "--kafka-tls-key-file",
            str(tmp_path / "client.key"),
            "--kafka-tls-key-password-file",
            str(tmp_path / "key-password"),
        )
    )
    assert "key-pass-123" not in repr(connection)
    listener = await asyncio.start_server(broker, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        context = connection.client_kwargs()["ssl_context"]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        assert await reader.read() == b"ok"
        writer.close()
        stranger = KafkaConnection(tls=True).client_kwargs()["ssl_context"]  # system CAs only
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=stranger, server_hostname="localhost"
            )
    finally:
        listener.close()
        await listener.wait_closed()
    [peer] = seen
    assert isinstance(peer, dict)
    assert ((("commonName", "relay"),)) in peer["subject"]


@pytest.mark.integration
async def test_the_default_connection_reaches_the_local_broker(kafka_bootstrap: str) -> None:
    connection = kafka_connection_from_args(parse("--kafka-bootstrap", kafka_bootstrap))
    admin = AIOKafkaAdminClient(**connection.client_kwargs())
    await admin.start()
    try:
        assert isinstance(await admin.list_topics(), list)
    finally:
        await admin.close()
