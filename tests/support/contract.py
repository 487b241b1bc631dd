"""The message contract (audit_common/schemas/v1): the records the tests read back are checked."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aiokafka import ConsumerRecord
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.support.kafka import REPO

SCHEMAS = REPO / "audit_common" / "schemas" / "v1"
SCHEMA_IDS = {
    "event": "urn:kube-audit-relay:schema:v1:event",
    "event-record": "urn:kube-audit-relay:schema:v1:event-record",
    "dead-letter-record": "urn:kube-audit-relay:schema:v1:dead-letter-record",
    "alert-record": "urn:kube-audit-relay:schema:v1:alert-record",
}


@cache
def validator(kind: str) -> Draft202012Validator:
    """A validator of ``kind`` (a key of ``SCHEMA_IDS``) that resolves the
    references between the schema documents."""
    documents = [json.loads(path.read_text()) for path in SCHEMAS.glob("*.schema.json")]
    registry: Registry[Any] = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in documents
    )
    schema = next(document for document in documents if document["$id"] == SCHEMA_IDS[kind])
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


def as_json(record: ConsumerRecord[bytes, bytes]) -> tuple[str, dict[str, Any]]:
    """The schema a record falls under, and the record as that schema describes it."""
    headers = {name: value.decode("utf-8", errors="replace") for name, value in record.headers}
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    assert record.value is not None, "a record without a value"
    if "reason" in headers:
        value: Any = record.value.decode("utf-8", errors="replace")
        return "dead-letter-record", {"key": key, "headers": headers, "value": value}
    if "priority" in headers:  # only the alerts sink writes it (consumers.sinks.alerts)
        return "alert-record", {"key": key, "headers": headers, "value": json.loads(record.value)}
    # The standard library reads what the grammar allows (numbers of any size, lone escapes).
    return "event-record", {"key": key, "headers": headers, "value": json.loads(record.value)}


def check_record(record: ConsumerRecord[bytes, bytes]) -> None:
    """Fail the test when ``record`` breaks the contract, naming where."""
    kind, document = as_json(record)
    errors = sorted(validator(kind).iter_errors(document), key=lambda error: list(error.path))
    assert not errors, (
        f"{record.topic}[{record.partition}]@{record.offset} breaks the {kind} schema: "
        + "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    )
