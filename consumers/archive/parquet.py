"""``--archive-format parquet``: the columns people query, plus each event's exact text.

pyarrow is an optional dependency (``pip install 'kube-audit-relay[parquet]'``), imported only
when a Parquet object is written or read: every consumer imports this module, few need it. The
``event`` column holds the events as published, so ``archive verify`` and ``replay`` treat a
Parquet object as its JSON lines.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from typing import Any

from audit_common.errors import ConfigError
from consumers.archive.layout import Encoded, ObjectKey, digest, event_time
from consumers.events import ConsumedEvent

CONTENT_TYPE = "application/vnd.apache.parquet"


def require_pyarrow() -> None:
    """Raise ConfigError when pyarrow is not installed; called when the flags are read."""
    if importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(
            "--archive-format parquet needs pyarrow: pip install 'kube-audit-relay[parquet]'"
        )


def _schema() -> Any:
    import pyarrow as pa

    text, texts = pa.string(), pa.list_(pa.string())
    return pa.schema(
        [
            ("time", pa.timestamp("us", tz="UTC")),
            ("cluster", text),
            ("auditID", text),
            ("stage", text),
            ("verb", text),
            ("user", text),
            ("groups", texts),
            ("resource", text),
            ("subresource", text),
            ("namespace", text),
            ("name", text),
            ("responseCode", pa.int32()),
            ("sourceIPs", texts),
            ("userAgent", text),
            ("event", text),
        ]
    )


def _code(event: ConsumedEvent) -> int | None:
    code = event.response_code
    return int(code) if code and code.lstrip("-").isdigit() else None


def encode_parquet(
    key: ObjectKey, events: Sequence[ConsumedEvent], lines: Sequence[bytes]
) -> Encoded:
    """One Parquet file (zstd) of ``events``; ``lines`` are their JSON lines, newline ended."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # A string column, as query engines want; bytes that are not UTF-8 (the relay publishes
    # none) become U+FFFD here, and the digest is of what is stored.
    texts = [line.rstrip(b"\n").decode("utf-8", errors="replace") for line in lines]
    columns = {
        "time": [event_time(e) for e in events],
        "cluster": [key.cluster] * len(events),
        "auditID": [e.audit_id for e in events],
        "stage": [e.stage for e in events],
        "verb": [e.verb for e in events],
        "user": [e.username for e in events],
        "groups": [list(e.groups) for e in events],
        "resource": [e.resource for e in events],
        "subresource": [e.subresource for e in events],
        "namespace": [e.namespace for e in events],
        "name": [e.name for e in events],
        "responseCode": [_code(e) for e in events],
        "sourceIPs": [list(e.source_ips) for e in events],
        "userAgent": [e.user_agent for e in events],
        "event": texts,
    }
    sink = io.BytesIO()
    pq.write_table(pa.table(columns, schema=_schema()), sink, compression="zstd")
    stored = [text.encode() for text in texts]
    return Encoded(key, sink.getvalue(), len(events), digest(stored), CONTENT_TYPE)


def decode_parquet(body: bytes) -> list[bytes]:
    """The ``event`` column's texts; raises OSError (ArrowInvalid is one) for a body that is
    not such a Parquet file."""
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(body), columns=["event"])
    except (pa.ArrowException, KeyError) as exc:
        raise OSError(f"not an archive Parquet file: {exc}") from exc
    return [text.encode() for text in table.column("event").to_pylist()]
