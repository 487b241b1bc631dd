"""The archive's object store, through obstore: S3 (and S3-compatible servers), GCS, Azure Blob
and local directories, chosen by the URL's scheme.

Credentials come the way obstore and each cloud expect them, never from flags: on S3 the
``AWS_*`` environment, a web identity token (IRSA) or the instance's role; on GCS
``GOOGLE_*`` or workload identity; on Azure ``AZURE_*`` or workload identity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import obstore
import orjson
from obstore.store import LocalStore, ObjectStore, from_url

from audit_common.errors import ArchiveUnavailable, ConfigError

log = logging.getLogger(__name__)

SCHEMES = ("s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "azure://", "file://")
# A local directory keeps no object metadata: it goes to a file beside the object.
SIDECAR = ".meta.json"
RetentionMode = Literal["governance", "compliance"]


@dataclass(frozen=True)
class StoreSettings:
    """Where the archive is: ``url`` (``s3://bucket/prefix``...), an S3-compatible ``endpoint``,
    and Object Lock retention for the objects written (``retain_days`` 0: none)."""

    url: str
    endpoint: str | None = None
    retain_days: int = 0
    retain_mode: RetentionMode = "governance"

    def check(self) -> None:
        """Raise ConfigError for a URL or retention obstore cannot use; no I/O."""
        if not self.url.startswith(SCHEMES):
            raise ConfigError(
                f"archive URL {self.url!r}: expected s3://BUCKET[/PREFIX], gs://, az:// or file://"
            )
        if self.retain_days and not self.url.startswith(("s3://", "s3a://")):
            raise ConfigError("--archive-retain-days needs an s3:// archive (S3 Object Lock)")
        if self.retain_days < 0:
            raise ConfigError(f"--archive-retain-days must be 0 or more, got {self.retain_days}")


class ArchiveStore:
    """Reads and writes archive objects; every failure is an ArchiveUnavailable.

    Made by the archive sink and the ``archive verify`` and ``replay`` commands. Opening does no
    I/O; a wrong URL raises ConfigError.
    """

    def __init__(self, settings: StoreSettings) -> None:
        settings.check()
        self.settings = settings
        self._local = settings.url.startswith("file://")
        self._reader = self._open({})
        self._writers: dict[str, ObjectStore] = {}  # by retain-until date

    def _open(self, headers: dict[str, str]) -> ObjectStore:
        try:
            if self._local:
                return LocalStore.from_url(self.settings.url, mkdir=True)
            options: dict[str, Any] = {}
            if self.settings.endpoint:
                options["endpoint"] = self.settings.endpoint
            client: dict[str, Any] = {"timeout": "60s", "connect_timeout": "10s"}
            if self.settings.endpoint and self.settings.endpoint.startswith("http://"):
                client["allow_http"] = True
            if headers:
                client["default_headers"] = headers
                # S3 takes an Object Lock PUT only with a checksum of the body.
                options["checksum_algorithm"] = "sha256"
            # The options differ by scheme, which obstore's overloads cannot see.
            build = cast(Callable[..., ObjectStore], from_url)
            return build(
                self.settings.url,
                client_options=client,
                retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=60)},
                **options,
            )
        except Exception as exc:  # obstore raises its own errors, ValueError for a bad URL
            raise ConfigError(f"archive URL {self.settings.url!r}: {exc}") from exc

    def _writer(self) -> ObjectStore:
        if not self.settings.retain_days:
            return self._reader
        # Until the end of the day: one client a day, and never less than the days asked.
        until = datetime.now(UTC).date() + timedelta(days=self.settings.retain_days + 1)
        stamp = f"{until.isoformat()}T00:00:00Z"
        if stamp not in self._writers:
            self._writers = {
                stamp: self._open(
                    {
                        "x-amz-object-lock-mode": self.settings.retain_mode.upper(),
                        "x-amz-object-lock-retain-until-date": stamp,
                    }
                )
            }
        return self._writers[stamp]

    # obstore's blocking calls, each in a thread: its async API aborts the interpreter at exit
    # now and then (a completion reaching Python as it finalizes), turning a clean exit into 134.

    async def put(self, path: str, body: bytes, metadata: dict[str, str]) -> None:
        """Write one object with its metadata; the same path again replaces it."""
        try:
            await asyncio.to_thread(self._put, self._writer(), path, body, metadata)
        except Exception as exc:
            raise ArchiveUnavailable(f"cannot write {path}: {_short(exc)}") from exc

    def _put(self, store: ObjectStore, path: str, body: bytes, metadata: dict[str, str]) -> None:
        if self._local:
            obstore.put(store, path, body)
            obstore.put(store, path + SIDECAR, orjson.dumps(metadata))
        else:
            obstore.put(store, path, body, attributes=metadata, use_multipart=False)

    async def get(self, path: str) -> tuple[bytes, dict[str, str]]:
        """An object's body and metadata. Raises FileNotFoundError for a missing object."""
        try:
            body, metadata = await asyncio.to_thread(self._get, path)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ArchiveUnavailable(f"cannot read {path}: {_short(exc)}") from exc
        return body, {str(key).lower(): str(value) for key, value in metadata.items()}

    def _get(self, path: str) -> tuple[bytes, dict[str, Any]]:
        result = obstore.get(self._reader, path)
        body = bytes(result.bytes())
        if not self._local:
            return body, dict(result.attributes)
        metadata = orjson.loads(bytes(obstore.get(self._reader, path + SIDECAR).bytes()))
        return body, metadata

    async def list_names(self, prefix: str) -> list[str]:
        """The paths of the objects directly under ``prefix`` (a ``.../`` directory)."""
        objects, _ = await self._list(prefix)
        return objects

    async def list_dirs(self, prefix: str | None) -> list[str]:
        """The ``.../`` prefixes directly under ``prefix`` (the top when None)."""
        _, directories = await self._list(prefix)
        return directories

    async def _list(self, prefix: str | None) -> tuple[list[str], list[str]]:
        where = prefix.rstrip("/") if prefix else None
        try:
            listed = await asyncio.to_thread(obstore.list_with_delimiter, self._reader, where)
        except Exception as exc:
            raise ArchiveUnavailable(f"cannot list {prefix or '/'}: {_short(exc)}") from exc
        objects = sorted(str(item["path"]) for item in listed["objects"])
        return objects, sorted(f"{path}/" for path in listed["common_prefixes"])


def _short(exc: BaseException) -> str:
    """obstore's message without the debug dump it appends."""
    return str(exc).split("\n\nDebug source:")[0].strip()


async def gather_limited(limit: int, *aws: Any) -> list[Any]:
    """``asyncio.gather`` with at most ``limit`` of ``aws`` running at once."""
    semaphore = asyncio.Semaphore(limit)

    async def one(aw: Any) -> Any:
        async with semaphore:
            return await aw

    return await asyncio.gather(*(one(aw) for aw in aws))
