"""``audit-source cloudwatch``: EKS's audit log in CloudWatch Logs.

With the control plane's ``audit`` log type enabled, EKS writes each audit event as the message
of one log event (the Event's JSON) to the log group ``/aws/eks/CLUSTER/cluster``, in streams
named ``kube-apiserver-audit-<id>``, one per apiserver instance, new ones as instances come.
Each stream is read in order with GetLogEvents; the position keeps each stream's forward token,
so a restart resumes every stream where it was delivered. Streams are listed again on every
round, so new ones are picked up. Throttling and connection errors are retried with backoff;
credentials are found as the AWS SDK finds them (IRSA's web identity, the environment, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, ClassVar

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from audit_common.errors import ConfigError, SourceError
from audit_common.options import EnvArgumentParser
from relay.sources.backoff import with_retries
from relay.sources.base import Chunk, OnError, Position, Source

# Errors worth waiting out: AWS's throttling codes, and the service's own trouble.
THROTTLED = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_RETRIED = THROTTLED | {"ServiceUnavailableException", "InternalFailure", "ServiceUnavailable"}
_MAX_BACKOFF_S = 30.0


def failure_kind(exc: Exception, what: str) -> str | None:
    """How ``with_retries`` treats a failure of a CloudWatch Logs call: AWS's throttling, its
    own trouble, an unreachable endpoint and a missing log group (logging may be enabled later)
    are waited out; any other refusal (access denied, a malformed request) raises SourceError."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _RETRIED:
            return "throttled" if code in THROTTLED else "unavailable"
        if code == "ResourceNotFoundException":
            return "not-found"
        raise SourceError(f"CloudWatch Logs refused {what}: {exc}") from exc
    if isinstance(exc, (BotoCoreError, OSError)):
        return "unreachable"
    return None


async def with_backoff(
    call: Callable[[], Awaitable[dict[str, Any]]],
    on_error: OnError,
    what: str,
    *,
    max_backoff: float,
) -> dict[str, Any]:
    """``call()``, retried as ``failure_kind`` says. Raises SourceError."""
    return await with_retries(
        call, on_error, what, partial(failure_kind, what=what), max_backoff=max_backoff
    )


class CloudWatchSource(Source):
    """Reads the audit streams of one EKS cluster's log group."""

    kind: ClassVar[str] = "cloudwatch"

    def __init__(
        self,
        log_group: str,
        stream_prefix: str,
        *,
        region: str | None,
        endpoint_url: str | None,
        from_start: bool,
        poll_interval: float,
        max_backoff: float = _MAX_BACKOFF_S,
    ) -> None:
        self.log_group = log_group
        self.stream_prefix = stream_prefix
        self.region = region
        self.endpoint_url = endpoint_url
        self.from_start = from_start
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff

    @classmethod
    def add_arguments(cls, parser: EnvArgumentParser) -> None:
        add = parser.add_option
        add(
            "--log-group",
            help="cloudwatch: the log group, /aws/eks/CLUSTER/cluster (required, or --eks-cluster)",
        )
        add("--eks-cluster", help="cloudwatch: the EKS cluster's name, for its log group")
        add(
            "--stream-prefix",
            default="kube-apiserver-audit-",
            help="cloudwatch: the prefix of the audit streams' names",
        )
        add("--region", help="cloudwatch: the AWS region (default: as the AWS SDK finds it)")
        add(
            "--endpoint-url",
            help="cloudwatch: the CloudWatch Logs endpoint (a VPC endpoint, or a test server)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CloudWatchSource:
        log_group = args.log_group or (
            f"/aws/eks/{args.eks_cluster}/cluster" if args.eks_cluster else None
        )
        if not log_group:
            raise ConfigError("audit-source cloudwatch needs --log-group or --eks-cluster")
        return cls(
            log_group,
            args.stream_prefix,
            region=args.region or None,
            endpoint_url=args.endpoint_url or None,
            from_start=args.from_start,
            poll_interval=args.poll_interval,
        )

    async def read(
        self, position: Position | None, on_error: OnError
    ) -> AsyncGenerator[Chunk, None]:
        # Streams: name -> {"token": GetLogEvents' next forward token} or {"start": ms}.
        streams: dict[str, dict[str, Any]] = dict((position or {}).get("streams", {}))
        # On a first start without --from-start, what is already there is skipped; streams
        # that appear later are read whole.
        start_ms = 0 if position is not None or self.from_start else int(time.time() * 1000)
        config = AioConfig(retries={"mode": "standard", "max_attempts": 2})
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                get_session().create_client(
                    "logs", region_name=self.region, endpoint_url=self.endpoint_url, config=config
                )
            )
            first_round = True
            while True:
                listed = await self._streams(client, on_error)
                newest = max((s.get("lastIngestionTime", 0) for s in listed), default=0) / 1000
                names = {s["logStreamName"] for s in listed}
                for name in sorted(names - streams.keys()):
                    streams[name] = {"start": start_ms if first_round else 0}
                for gone in streams.keys() - names:
                    del streams[gone]  # expired by the group's retention
                first_round = False
                read_any = False
                for name in sorted(streams):
                    async for items, token in self._events(client, name, streams[name], on_error):
                        read_any = True
                        streams[name] = {"token": token}
                        yield Chunk(items, {"streams": dict(streams)}, newest or None)
                if not read_any:
                    yield Chunk([], {"streams": dict(streams)}, newest or None, caught_up=True)
                    await asyncio.sleep(self.poll_interval)

    async def _streams(self, client: Any, on_error: OnError) -> list[dict[str, Any]]:
        """The audit streams of the log group (all pages)."""
        listed: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "logGroupName": self.log_group,
                "logStreamNamePrefix": self.stream_prefix,
            }
            if token:
                kwargs["nextToken"] = token
            page = await with_backoff(
                partial(client.describe_log_streams, **kwargs),
                on_error,
                f"DescribeLogStreams of {self.log_group}",
                max_backoff=self.max_backoff,
            )
            listed.extend(page.get("logStreams", []))
            token = page.get("nextToken")
            if not token:
                return listed

    async def _events(
        self, client: Any, name: str, at: dict[str, Any], on_error: OnError
    ) -> AsyncIterator[tuple[list[bytes], str]]:
        """The pages of a stream's new events, each with the token after it, until none is new."""
        kwargs: dict[str, Any] = {
            "logGroupName": self.log_group,
            "logStreamName": name,
            "startFromHead": True,
        }
        if "token" in at:
            kwargs["nextToken"] = at["token"]
        else:
            kwargs["startTime"] = at.get("start", 0)
        while True:
            page = await with_backoff(
                partial(client.get_log_events, **kwargs),
                on_error,
                f"GetLogEvents of {name}",
                max_backoff=self.max_backoff,
            )
            token = page["nextForwardToken"]
            items = [event["message"].encode() for event in page.get("events", [])]
            if not items:
                if token != kwargs.get("nextToken"):
                    yield [], token  # no events, but a token to resume from
                return
            yield items, token
            kwargs.pop("startTime", None)
            if token == kwargs.get("nextToken"):
                return
            kwargs["nextToken"] = token
