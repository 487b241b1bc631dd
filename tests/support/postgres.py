"""A real PostgreSQL server for the tests: a private cluster (initdb, pg_ctl) in a temporary
directory on an unused 127.0.0.1 port, or the server that POSTGRES_DSN names.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` user (created by Debian's ``postgresql`` package, which
``deploy/local/setup --for-tests`` installs) and every server command runs through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.net import unused_port

SUPERUSER = "postgres"
# The superuser's password on a private cluster: host connections need it (scram-sha-256).
PASSWORD = "audit-test-secret"


def server_bin_dir() -> Path:
    """Where initdb and pg_ctl are: PATH, else the newest of Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    if not candidates:
        raise RuntimeError(
            "no PostgreSQL server binaries: run deploy/local/setup --for-tests (as root)"
        )
    newest = max(candidates, key=lambda path: int(Path(path).parts[-3]))
    return Path(newest).parent


@dataclass
class LocalPostgres:
    """A private cluster that a test may stop and start again (an outage of the store)."""

    port: int = field(default_factory=unused_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="audit-pg-")))

    def __post_init__(self) -> None:
        self.bin_dir = server_bin_dir()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SUPERUSER)
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", SUPERUSER, "--"]
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as_owner, str(self.bin_dir / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {args[:2]} failed:\n{result.stderr}{result.stdout}{log}")

    def init(self) -> None:
        password_file = self.directory / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._as_owner:
            shutil.chown(password_file, SUPERUSER)
        self._run(
            "initdb",
            *("-D", str(self.data), "-U", SUPERUSER, f"--pwfile={password_file}"),
            *("--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8"),
            *("--no-locale", "--no-sync"),
        )
        password_file.unlink()

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} "
            "-c max_connections=40 -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options)

    def stop(self) -> None:
        """A fast shutdown, as in a restart: sessions are cut, nothing committed is lost."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        try:
            if self.is_running():
                self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` (a postgresql:// URL) pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def password_of(dsn: str) -> str | None:
    return urlsplit(dsn).password


async def create_database(admin_dsn: str) -> str:
    """A new empty database on the server of ``admin_dsn``; returns the DSN that reaches it."""
    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
