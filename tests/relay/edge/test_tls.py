"""Server TLS (relay/tls.py) over real loopback connections, with certificates made by trustme."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from audit_common.errors import ConfigError
from audit_common.options import EnvArgumentParser
from relay.edge.tls import ServerTLS, TLSSettings, add_tls_arguments, tls_settings_from_args
from tests.support.net import wait_until


def write_leaf(ca: trustme.CA, directory: Path, name: str = "server") -> tuple[Path, Path]:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    return cert, key


def der_of(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"hello")
    await writer.drain()
    writer.close()


async def greeting(port: int, context: ssl.SSLContext) -> bytes:
    """What the server says to a client with ``context``: nothing when the handshake fails."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        # TLS 1.3 reports a refused client certificate only on the first read.
        data = await reader.read()
        writer.close()
    except (ssl.SSLError, ConnectionError):
        return b""
    return data


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ServerTLS, int, trustme.CA, Path]]:
    ca = trustme.CA()
    cert, key = write_leaf(ca, tmp_path)
    tls = ServerTLS(TLSSettings(str(cert), str(key), None, reload_interval=0.05))
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=tls.context)
    port = server.sockets[0].getsockname()[1]
    async with tls:
        yield tls, port, ca, tmp_path
    server.close()
    await server.wait_closed()


async def served_certificate(port: int, ca: trustme.CA, **options: object) -> bytes:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    for name, value in options.items():
        setattr(context, name, value)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return der


async def test_a_renewed_certificate_is_served_without_restart(
    served: tuple[ServerTLS, int, trustme.CA, Path],
) -> None:
    _, port, ca, directory = served
    first = await served_certificate(port, ca)
    assert first == der_of(directory / "server.crt")
    renewed_cert, _ = write_leaf(ca, directory, "server")  # same paths, new key pair
    renewed = der_of(renewed_cert)
    assert renewed != first

    async def serves_renewed() -> bool:
        return await served_certificate(port, ca) == renewed

    await wait_until(serves_renewed, timeout=10, what="the renewed certificate")


async def test_a_half_written_pair_keeps_the_old_certificate(
    served: tuple[ServerTLS, int, trustme.CA, Path], caplog: pytest.LogCaptureFixture
) -> None:
    tls, port, ca, directory = served
    await tls.stop()  # reload by hand, so that the test decides when
    first = await served_certificate(port, ca)
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))  # key not yet renewed
    with caplog.at_level(logging.ERROR, logger="relay.edge.tls"):
        assert not tls.reload_if_changed()
        assert not tls.reload_if_changed()
    assert caplog.text.count("keeping the current TLS certificate") == 1
    assert await served_certificate(port, ca) == first
    leaf.private_key_pem.write_to_path(str(directory / "server.key"))
    assert tls.reload_if_changed()
    assert await served_certificate(port, ca) == der_of(directory / "server.crt")


async def test_tls_below_1_2_is_refused(served: tuple[ServerTLS, int, trustme.CA, Path]) -> None:
    _, port, ca, _ = served
    assert await served_certificate(port, ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    try:
        with pytest.warns(DeprecationWarning):
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    assert await greeting(port, context) == b""


async def test_the_client_ca_is_loaded_and_certificates_are_verified_if_presented(
    tmp_path: Path,
) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    cert, key = write_leaf(server_ca, tmp_path)
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    tls = ServerTLS(TLSSettings(str(cert), str(key), str(tmp_path / "clients.pem")))
    assert tls.context.verify_mode == ssl.CERT_OPTIONAL
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=tls.context)
    port = server.sockets[0].getsockname()[1]
    try:
        trusted = ssl.create_default_context()
        server_ca.configure_trust(trusted)
        client_ca.issue_cert("client@example").configure_cert(trusted)
        assert await greeting(port, trusted) == b"hello"
        stranger = ssl.create_default_context()
        server_ca.configure_trust(stranger)
        trustme.CA().issue_cert("client@example").configure_cert(stranger)
        assert await greeting(port, stranger) == b""
    finally:
        server.close()
        await server.wait_closed()


def parse(*argv: str) -> argparse.Namespace:
    parser = EnvArgumentParser(prog="t", env_prefix="AUDIT_RELAY", environ={})
    add_tls_arguments(parser)
    return parser.parse_args(argv)


def test_settings_errors(tmp_path: Path) -> None:
    cert, key = write_leaf(trustme.CA(), tmp_path)
    assert not tls_settings_from_args(parse()).enabled
    assert tls_settings_from_args(parse("--tls-cert", str(cert), "--tls-key", str(key))).enabled
    with pytest.raises(ConfigError, match="go together"):
        tls_settings_from_args(parse("--tls-cert", str(cert)))
    with pytest.raises(ConfigError, match="--client-ca needs --tls-cert"):
        tls_settings_from_args(parse("--client-ca", str(cert)))
    with pytest.raises(ConfigError, match="cannot load --tls-cert"):
        tls_settings_from_args(parse("--tls-cert", str(key), "--tls-key", str(key)))
    with pytest.raises(ConfigError, match="cannot load --client-ca"):
        tls_settings_from_args(
            parse("--tls-cert", str(cert), "--tls-key", str(key), "--client-ca", "/nonexistent")
        )
