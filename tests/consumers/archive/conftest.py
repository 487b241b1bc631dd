"""Fixtures for the archive tests: a real S3-compatible server and fresh archives on it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumers.archive.store import ArchiveStore, StoreSettings
from tests.support.net import unused_port
from tests.support.s3 import BUCKET, LocalS3

CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


@dataclass
class Archive:
    """A fresh prefix of the bucket: its URL, the flags and environment a process needs, and a
    store to read it in the test."""

    server: LocalS3
    url: str
    env: dict[str, str]

    @property
    def flags(self) -> list[str]:
        return ["--archive-endpoint", self.server.endpoint]

    def file(self, path: str) -> Path:
        """Where the server keeps the object at ``path`` (its filesystem storage)."""
        bucket_and_prefix = self.url.removeprefix("s3://")
        return self.server.state_dir / "data" / bucket_and_prefix / path

    def store(self) -> ArchiveStore:
        return ArchiveStore(StoreSettings(self.url, self.server.endpoint))


def _started(port: int, state_dir: Path, kind: str = "s3proxy") -> tuple[LocalS3, dict[str, str]]:
    server = LocalS3(port, state_dir, kind)
    env = server.start()
    # obstore in the test process takes credentials from the environment, as in production.
    for name in CREDENTIALS:
        os.environ[name] = env[name]
    return server, {name: env[name] for name in CREDENTIALS}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalS3, dict[str, str]]]:
    server, env = _started(unused_port(), tmp_path_factory.mktemp("s3"))
    try:
        yield server, env
    finally:
        server.stop()


@pytest.fixture
def archive(s3_server: tuple[LocalS3, dict[str, str]]) -> Archive:
    server, env = s3_server
    return Archive(server, f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}", env)


@pytest.fixture
def private_archive(tmp_path: Path) -> Iterator[Callable[[], Archive]]:
    """Archives on a server of the test's own (S3Proxy, or versitygw for Object Lock), which it
    may pause; stopped at teardown."""
    made: list[LocalS3] = []

    def make(kind: str = "s3proxy") -> Archive:
        server, env = _started(unused_port(), tmp_path / f"s3-{len(made)}", kind)
        made.append(server)
        return Archive(server, f"s3://{BUCKET}/private", env)

    yield make
    for server in made:
        server.stop()
