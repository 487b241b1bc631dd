"""Client authentication (relay/auth.py): token files, and the middleware over real TLS."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from audit_common.errors import ConfigError
from audit_common.options import EnvArgumentParser
from relay.edge.auth import (
    CLUSTER,
    Authenticator,
    AuthSettings,
    TokenFile,
    add_auth_arguments,
    auth_middleware,
    auth_settings_from_args,
    parse_tokens,
)
from relay.edge.tls import ServerTLS, TLSSettings
from tests.support.net import unused_port

TOKEN_A = "a" * 20 + "-token-of-cluster-a"
TOKEN_B = "b" * 20 + "-token-of-cluster-b"


def test_token_file_lines_comments_and_blanks() -> None:
    text = f"# tokens\n\n  {TOKEN_A} , prod-eu.1 \n{TOKEN_B},staging\n"
    tokens = parse_tokens(text, "tokens.csv")
    assert [token.cluster for token in tokens] == ["prod-eu.1", "staging"]
    assert TOKEN_A not in repr(tokens)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"# c\n{TOKEN_A}\n", "tokens.csv:2: expected 'token,cluster-name'"),
        (f"{TOKEN_A},a,b\n", "tokens.csv:1: expected"),
        ("short,prod\n", "tokens.csv:1: the token must be at least 16"),
        (f"{TOKEN_A[:5]} {TOKEN_A},prod\n", "tokens.csv:1: the token must be"),
        (f"{TOKEN_A},\n", "tokens.csv:1: cluster name '' is not"),
        (f"{TOKEN_A},bad cluster\n", "tokens.csv:1: cluster name 'bad cluster'"),
        (f"{TOKEN_A},a\n\n{TOKEN_A},b\n", "tokens.csv:3: the same token is on an earlier line"),
        ("# only comments\n", "tokens.csv: no tokens"),
    ],
)
def test_bad_token_files_name_the_line_and_never_the_token(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_tokens(text, "tokens.csv")
    assert message in str(error.value)
    assert TOKEN_A[:10] not in str(error.value)


def touch_later(path: Path) -> None:
    """Make sure a rewrite is seen as a change even on a coarse-grained clock."""
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))


def test_a_rotated_token_file_is_re_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN_A},a\n")
    tokens = TokenFile(str(path))
    assert tokens.cluster_for(TOKEN_A) == "a"
    assert tokens.cluster_for(TOKEN_B) is None
    path.write_text(f"{TOKEN_B},b\n")
    touch_later(path)
    assert tokens.cluster_for(TOKEN_B) == "b"
    assert tokens.cluster_for(TOKEN_A) is None
    path.write_text("garbage\n")
    touch_later(path)
    with caplog.at_level(logging.ERROR, logger="relay.edge.auth"):
        assert tokens.cluster_for(TOKEN_B) == "b"
        assert tokens.cluster_for(TOKEN_B) == "b"
    assert caplog.text.count("keeping the tokens read before") == 1
    assert "garbage" not in caplog.text
    path.unlink()
    assert tokens.cluster_for(TOKEN_B) == "b"


def test_a_missing_token_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--token-file: cannot read"):
        TokenFile(str(tmp_path / "none"))


def parse(*argv: str) -> argparse.Namespace:
    parser = EnvArgumentParser(prog="t", env_prefix="AUDIT_RELAY", environ={})
    add_auth_arguments(parser)
    parser.add_option("--insecure", action="store_true", help="")
    return parser.parse_args(argv)


def test_without_insecure_tls_and_client_authentication_are_required(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN_A},a\n")
    with_tokens = parse("--token-file", str(tokens))
    assert auth_settings_from_args(with_tokens, tls=True, client_ca=False).token_file
    assert auth_settings_from_args(parse(), tls=True, client_ca=True).require_client_cert
    for args, tls in ((parse(), True), (with_tokens, False), (parse(), False)):
        with pytest.raises(ConfigError, match="pass --insecure"):
            auth_settings_from_args(args, tls=tls, client_ca=False)
    with caplog.at_level(logging.WARNING, logger="relay.edge.auth"):
        auth_settings_from_args(parse("--insecure"), tls=False, client_ca=False)
    assert "plain HTTP without client authentication" in caplog.text
    with pytest.raises(ConfigError, match="--allowed-client-cn needs --client-ca"):
        auth_settings_from_args(parse("--allowed-client-cn", "x"), tls=True, client_ca=False)
    with pytest.raises(ConfigError, match="tokens:1"):
        tokens.write_text("nonsense\n")
        auth_settings_from_args(with_tokens, tls=True, client_ca=False)


# --- the middleware, in a real aiohttp server over real TLS ---

Serve = Callable[[AuthSettings], Awaitable[str]]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    leaf = server_ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    return {"server_ca": server_ca, "client_ca": client_ca, "dir": tmp_path}


def client_context(pki: dict[str, object], common_name: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    server_ca = pki["server_ca"]
    assert isinstance(server_ca, trustme.CA)
    server_ca.configure_trust(context)
    if common_name is not None:
        client_ca = pki["client_ca"]
        assert isinstance(client_ca, trustme.CA)
        client_ca.issue_cert(f"{common_name}.example", common_name=common_name).configure_cert(
            context
        )
    return context


@pytest.fixture
async def serve(pki: dict[str, object]) -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []
    directory = pki["dir"]
    assert isinstance(directory, Path)

    async def start(settings: AuthSettings) -> str:
        failures: list[str] = []

        async def audits(request: web.Request) -> web.Response:
            return web.json_response({"cluster": request[CLUSTER], "failures": failures})

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        authenticator = Authenticator(settings, default_cluster="default")
        app = web.Application(
            middlewares=[
                auth_middleware(
                    authenticator, public_paths=["/healthz"], on_failure=failures.append
                )
            ]
        )
        app.router.add_post("/api/audits", audits)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        tls = ServerTLS(
            TLSSettings(
                str(directory / "server.crt"),
                str(directory / "server.key"),
                str(directory / "clients.pem"),
            )
        )
        port = unused_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls.context).start()
        return f"https://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def post(
    base: str, context: ssl.SSLContext, token: str | None = None
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/api/audits", data=b"{}", headers=headers, ssl=context) as response,
    ):
        return response.status, await response.json()


async def test_tokens_stamp_the_cluster_and_every_refusal_looks_the_same(
    serve: Serve, pki: dict[str, object], tmp_path: Path
) -> None:
    (tmp_path / "tokens").write_text(f"{TOKEN_A},cluster-a\n{TOKEN_B},cluster-b\n")
    base = await serve(AuthSettings(token_file=str(tmp_path / "tokens")))
    context = client_context(pki, None)
    assert await post(base, context, TOKEN_A) == (200, {"cluster": "cluster-a", "failures": []})
    status, body = await post(base, context, TOKEN_B)
    assert (status, body["cluster"]) == (200, "cluster-b")
    refusals = [await post(base, context, token) for token in (None, TOKEN_A + "x", TOKEN_A[:-1])]
    assert refusals == [(401, {"error": "unauthorized"})] * 3
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/api/audits", headers={"Authorization": f"Basic {TOKEN_A}"}, ssl=context
        ) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.content_type == "application/json"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/healthz", ssl=context) as response,
    ):
        assert response.status == 200
    status, body = await post(base, context, TOKEN_A)
    assert body["failures"] == [
        "no bearer token",
        "unknown bearer token",
        "unknown bearer token",
        "no bearer token",
    ]


async def test_client_certificates_and_common_names(serve: Serve, pki: dict[str, object]) -> None:
    base = await serve(
        AuthSettings(require_client_cert=True, allowed_client_cns=frozenset({"kube-apiserver"}))
    )
    status, body = await post(base, client_context(pki, "kube-apiserver"))
    assert (status, body["cluster"]) == (200, "default")
    assert await post(base, client_context(pki, "someone-else")) == (
        401,
        {"error": "unauthorized"},
    )
    assert await post(base, client_context(pki, None)) == (401, {"error": "unauthorized"})
    status, body = await post(base, client_context(pki, "kube-apiserver"))
    assert body["failures"] == [
        "client certificate common name not allowed",
        "no client certificate",
    ]


async def test_certificate_and_token_both_required_when_both_configured(
    serve: Serve, pki: dict[str, object], tmp_path: Path
) -> None:
    (tmp_path / "tokens").write_text(f"{TOKEN_A},cluster-a\n")
    base = await serve(AuthSettings(token_file=str(tmp_path / "tokens"), require_client_cert=True))
    assert (await post(base, client_context(pki, "x"), TOKEN_A))[0] == 200
    assert (await post(base, client_context(pki, None), TOKEN_A))[0] == 401
    assert (await post(base, client_context(pki, "x"), TOKEN_B))[0] == 401
