"""The headers of the records on the topics: the names both programs write and read.

Part of the message contract (``schemas/`` and the README's "Consuming the topic"): a consumer
routes and filters on these without decoding the value. ``SCHEMA_VERSION`` goes up when a
record's value or headers change in a way a downstream consumer must know about.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION_HEADER = "schema-version"
SCHEMA_VERSION = b"1"

CLUSTER = "cluster"
# The headers of an event record, in the order the relay writes them (each only when the event
# has it as a non-empty string), after the schema version.
EVENT_HEADERS = (CLUSTER, "apiVersion", "verb", "stage", "level", "resource", "namespace", "user")
# On an event whose item held bytes that are not UTF-8, last: how many bytes the relay escaped
# (``audit_common.escaped_bytes``).
ESCAPED_BYTES = "escaped-bytes"
# Only on a record an ``audit-source`` read (``relay.sources``), not the webhook: its kind
# ("file", "cloudwatch", "eventhubs", "pubsub"); on its dead letters too.
SOURCE = "source"
# Only on a record republished from the archive by ``audit-consumer replay``: which replay.
REPLAY = "replay"

# A dead-letter record: why it is there, and, when the relay cut it, how long it was.
REASON = "reason"
TRUNCATED_FROM_BYTES = "truncated-from-bytes"
# Set (to "true") when the relay kept none of what it received: redaction was on and could not
# read it, so the value is a summary (size, SHA-256, the event fields found), not the bytes.
CONTENT_WITHHELD = "content-withheld"
# Added by a consumer to a dead letter it cut: the SHA-256 (hex) of the whole value.
DIGEST = "digest"
# Added by a consumer to what it dead-letters: where the record was read, and the sink that
# refused the event (absent when the record could not be decoded).
SINK = "sink"
SOURCE_TOPIC = "source-topic"
SOURCE_PARTITION = "source-partition"
SOURCE_OFFSET = "source-offset"


def headers_of(*values: Any) -> list[tuple[str, bytes]]:
    """The schema version, then ``values`` in the order of ``EVENT_HEADERS``, but those not a
    non-empty str."""
    return [
        (SCHEMA_VERSION_HEADER, SCHEMA_VERSION),
        *(
            (name, value.encode())
            for name, value in zip(EVENT_HEADERS, values, strict=True)
            if isinstance(value, str) and value
        ),
    ]
