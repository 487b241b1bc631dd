"""Realistic audit traffic made of the sample events (audit_common/samples.py), encoded before any
timing starts.

Three kinds of event, as an audit policy produces them: Metadata (~1 KB), Request (2-4 KB, the
object as sent, with kubectl's last-applied-configuration annotation) and RequestResponse
(10-50 KB: a list response of 10 to 50 KB of objects). Bodies are EventLists of ``batch`` items,
compact with a trailing newline, as kube-apiserver posts them.

Every event needs its own auditID across the whole run, yet encoding a body per request would
make the load generator compete with the relay for the CPU. So a few bodies are encoded once
(``BodyTemplate``), and each request copies one and overwrites the first 8 hex digits of every
auditID in place with the request's sequence number: one memcpy and ``batch`` slice writes.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from audit_common.samples import CLUSTERS, sample_events
from tests.support.events import event_list

# Share of each level, by event count: Metadata dominates real policies, and the few
# RequestResponse events carry most of the bytes.
MIX = (("Metadata", 0.6), ("Request", 0.3), ("RequestResponse", 0.1))
SIZES = {"Metadata": (600, 1500), "Request": (2000, 4000), "RequestResponse": (10000, 50000)}
_SEQUENCE_DIGITS = 8
_V1BETA1_ONLY = ("kind", "apiVersion", "metadata", "timestamp")


def _item(event: dict[str, Any]) -> dict[str, Any]:
    """An EventList item as the apiserver sends it: v1, no kind or apiVersion of its own."""
    return {key: value for key, value in event.items() if key not in _V1BETA1_ONLY}


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventFactory:
    """Makes events of each level from the sample events; ``rng`` makes a run reproducible."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        seed = rng.getrandbits(32)
        events = [_item(e) for c in CLUSTERS for e in sample_events(300, cluster=c, seed=seed)]
        self.plain = events
        self.with_object = [e for e in events if isinstance(e.get("requestObject"), dict)]
        # Lists of objects the redactor does not look into (as most list responses are): the
        # request objects of such events, to make the items of a list response of.
        self.responses = [
            e
            for e in self.with_object
            if (e.get("objectRef") or {}).get("resource") not in ("secrets", "configmaps")
        ]

    def make(self, level: str) -> dict[str, Any]:
        low, high = SIZES[level]
        maker = {
            "Metadata": self._metadata,
            "Request": self._request,
            "RequestResponse": self._request_response,
        }[level]
        for _ in range(100):
            event = maker(low, high)
            if low <= len(orjson.dumps(event)) <= high:
                return event
        raise RuntimeError(f"the samples cannot make {level} events of {low}-{high} bytes")

    def _base(self, source: list[dict[str, Any]], level: str) -> dict[str, Any]:
        event = copy.deepcopy(self.rng.choice(source))
        for name in ("requestObject", "responseObject"):
            event.pop(name, None)
        event["level"] = level
        event["stage"] = "ResponseComplete"
        event["auditID"] = str(uuid.UUID(int=self.rng.getrandbits(128)))
        now = datetime.now(UTC)
        event["requestReceivedTimestamp"] = _timestamp(now - timedelta(milliseconds=3))
        event["stageTimestamp"] = _timestamp(now)
        return event

    def _metadata(self, low: int, high: int) -> dict[str, Any]:
        return self._base(self.plain, "Metadata")

    def _request(self, low: int, high: int) -> dict[str, Any]:
        source = self.rng.choice(self.with_object)
        event = self._base([source], "Request")
        obj = copy.deepcopy(source["requestObject"])
        event["requestObject"] = obj
        if len(orjson.dumps(event)) < low:
            # What `kubectl apply` adds: the object itself, as a JSON string annotation.
            metadata = obj.setdefault("metadata", {})
            applied = orjson.dumps(obj).decode()
            annotations = metadata.setdefault("annotations", {}) or {}
            annotations["kubectl.kubernetes.io/last-applied-configuration"] = applied + "\n"
            metadata["annotations"] = annotations
        return event

    def _request_response(self, low: int, high: int) -> dict[str, Any]:
        source = self.rng.choice(self.responses)
        event = self._base([source], "RequestResponse")
        resource = (source.get("objectRef") or {}).get("resource", "pods")
        namespace = (source.get("objectRef") or {}).get("namespace", "default")
        event["verb"] = "list"
        event["requestURI"] = f"/api/v1/namespaces/{namespace}/{resource}?limit=500"
        event["objectRef"] = {"resource": resource, "namespace": namespace, "apiVersion": "v1"}
        event["responseStatus"] = {"metadata": {}, "code": 200}
        target = self.rng.randint(low, high)
        items: list[Any] = []
        event["responseObject"] = {
            "kind": "List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.rng.randint(10**5, 10**7))},
            "items": items,
        }
        size = len(orjson.dumps(event))
        template = source["requestObject"]
        while True:
            item = self._variant(template)
            grown = size + len(orjson.dumps(item)) + 1
            if grown > target:
                return event
            items.append(item)
            size = grown

    def _variant(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A copy that differs where real objects of one list differ: name, uid, version."""
        item = copy.deepcopy(obj)
        metadata = item.setdefault("metadata", {})
        name = metadata.get("name") or metadata.get("generateName") or "x"
        metadata["name"] = f"{name}{self.rng.getrandbits(20):05x}"
        metadata["uid"] = str(uuid.UUID(int=self.rng.getrandbits(128)))
        metadata["resourceVersion"] = str(self.rng.randint(10**5, 10**7))
        return item

    def mixed(self, count: int, mix: tuple[tuple[str, float], ...] = MIX) -> list[dict[str, Any]]:
        levels = [level for level, _ in mix]
        weights = [weight for _, weight in mix]
        return [self.make(level) for level in self.rng.choices(levels, weights, k=count)]


@dataclass(frozen=True)
class BodyTemplate:
    """One encoded EventList and where each item's auditID starts in it."""

    body: bytes
    offsets: tuple[int, ...]
    events: int

    @classmethod
    def of(cls, items: list[dict[str, Any]]) -> BodyTemplate:
        body = event_list(items)
        offsets = []
        for item in items:
            at = body.find(b'"auditID":"' + item["auditID"].encode() + b'"')
            assert at >= 0
            offsets.append(at + len(b'"auditID":"'))
        return cls(body, tuple(offsets), len(items))

    def stamp(self, sequence: int) -> bytearray:
        """A copy whose auditIDs start with ``sequence``: unique while sequences are."""
        prefix = b"%08x" % sequence
        body = bytearray(self.body)
        for offset in self.offsets:
            body[offset : offset + _SEQUENCE_DIGITS] = prefix
        return body


class Traffic:
    """Endless unique bodies of ``batch`` events, drawn from ``templates`` encoded up front."""

    def __init__(self, templates: list[BodyTemplate]) -> None:
        self.templates = templates
        self._sequence = 0

    @classmethod
    def build(
        cls,
        batch: int,
        *,
        templates: int = 8,
        seed: int = 1,
        mix: tuple[tuple[str, float], ...] = MIX,
    ) -> Traffic:
        factory = EventFactory(random.Random(seed))
        made = []
        for index in range(templates):
            items = factory.mixed(batch, mix)
            # Sequence (stamped per request), template, position, then random: unique in a run.
            for position, item in enumerate(items):
                tail = item["auditID"][19:]
                item["auditID"] = f"{0:0{_SEQUENCE_DIGITS}x}-{index:04x}-{position:04x}-{tail}"
            made.append(BodyTemplate.of(items))
        return cls(made)

    def next(self) -> tuple[bytearray, int]:
        """The next body and its event count."""
        self._sequence += 1
        template = self.templates[self._sequence % len(self.templates)]
        return template.stamp(self._sequence), template.events

    def __iter__(self) -> Iterator[tuple[bytearray, int]]:
        while True:
            yield self.next()

    @property
    def mean_body_bytes(self) -> float:
        return sum(len(t.body) for t in self.templates) / len(self.templates)


def published_values(templates: list[BodyTemplate]) -> list[bytes]:
    """Each event as the relay publishes it (kind and apiVersion added): the ceiling's payloads."""
    values = []
    for template in templates:
        for item in orjson.loads(template.body)["items"]:
            values.append(orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", **item}))
    return values
