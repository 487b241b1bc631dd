from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit_common.errors import ConfigError
from consumers.events import ConsumedEvent, decode
from consumers.settings import build_settings
from consumers.sinks.csv_log import COLUMNS, CsvLogSink
from tests.consumers.messages import original_row
from tests.support.events import audit_events

AWKWARD = {
    "auditID": "0b0e",
    "level": "Metadata",
    "stage": "ResponseComplete",
    "requestURI": '/api/v1/pods?labelSelector=app+in+(a,b)&fieldSelector=x="y"',
    "verb": "list",
    "user": {"username": 'CN=Doe, "Jane"', "groups": ["dev", "ops"]},
    "impersonatedUser": {"username": "bob"},
    "sourceIPs": ["10.0.0.1", "10.0.0.2"],
    "userAgent": "kubectl/v1.30",
    "objectRef": {"resource": "pods", "namespace": "team-a", "subresource": "log"},
    "responseStatus": {"code": 200},
    "requestReceivedTimestamp": "2024-05-01T10:00:00.000001Z",
    "stageTimestamp": "2024-05-01T10:00:00.000002Z",
    "annotations": {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": 'RBAC: allowed by ClusterRoleBinding "view, all"\nline 2',
    },
}


def consumed(data: dict[str, Any], cluster: str | None = "prod") -> ConsumedEvent:
    headers = [("cluster", cluster.encode())] if cluster else []
    return decode(orjson.dumps(data), headers, topic="t", partition=0, offset=0)


async def write_csv(tmp_path: Path, events: list[ConsumedEvent], *flags: str) -> str:
    output = tmp_path / "out.csv"
    _, sink, _ = build_settings(["--sink", "csv", "--output", str(output), *flags], {})
    assert isinstance(sink, CsvLogSink)
    async with sink:
        await sink.write(events)
        await sink.flush()
    return output.read_text(encoding="utf-8")


async def test_rows_read_back_field_by_field(tmp_path: Path) -> None:
    events = audit_events()
    text = await write_csv(tmp_path, [consumed(e) for e in events])
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == len(events)
    for row, event in zip(rows, events, strict=True):
        assert row == original_row(event), event["auditID"]


async def test_commas_quotes_and_newlines_survive_quoting(tmp_path: Path) -> None:
    text = await write_csv(tmp_path, [consumed(AWKWARD)])
    [row] = list(csv.reader(io.StringIO(text)))
    assert row == original_row(AWKWARD)
    assert row[6] == "10.0.0.1,10.0.0.2"
    assert '"RBAC: allowed by ClusterRoleBinding ""view, all""\nline 2"' in text


async def test_missing_values_print_unknown_or_the_chosen_text(tmp_path: Path) -> None:
    bare = {"auditID": "1", "sourceIPs": [], "annotations": {}}
    [row] = list(csv.reader(io.StringIO(await write_csv(tmp_path, [consumed(bare)]))))
    assert row == ["UNKNOWN"] * 11
    (tmp_path / "out.csv").unlink()
    text = await write_csv(tmp_path, [consumed(bare)], "--csv-missing", "-")
    assert next(csv.reader(io.StringIO(text))) == ["-"] * 11


async def test_prefix_and_header_as_in_the_original(tmp_path: Path) -> None:
    events = [consumed(e) for e in audit_events()[:3]]
    text = await write_csv(tmp_path, events, "--csv-prefix", "###", "--csv-header")
    lines = text.splitlines()
    assert all(line.startswith("###") for line in lines)
    rows = list(csv.reader(line[3:] for line in lines))
    assert rows[0] == [
        "stageTimestamp", "level", "stage", "requestURI", "verb", "username", "sourceIPs",
        "resource", "name", "decision", "reason",
    ]  # fmt: skip
    assert rows[1:] == [original_row(e) for e in audit_events()[:3]]


async def test_header_is_written_once_per_file(tmp_path: Path) -> None:
    events = [consumed(e) for e in audit_events()[:2]]
    await write_csv(tmp_path, events[:1], "--csv-header")
    text = await write_csv(tmp_path, events[1:], "--csv-header")  # a restart appends
    rows = list(csv.reader(io.StringIO(text)))
    assert [row[0] for row in rows] == [
        "stageTimestamp",
        events[0].stage_timestamp,
        events[1].stage_timestamp,
    ]


async def test_every_documented_column(tmp_path: Path) -> None:
    text = await write_csv(tmp_path, [consumed(AWKWARD)], "--csv-columns", ",".join(COLUMNS))
    [row] = list(csv.reader(io.StringIO(text)))
    cells = dict(zip(COLUMNS, row, strict=True))
    assert cells["namespace"] == "team-a"
    assert cells["cluster"] == "prod"
    assert cells["userAgent"] == "kubectl/v1.30"
    assert cells["code"] == "200"
    assert cells["auditID"] == "0b0e"
    assert cells["requestReceivedTimestamp"] == "2024-05-01T10:00:00.000001Z"
    assert cells["impersonatedUser"] == "bob"
    assert cells["groups"] == "dev,ops"
    assert cells["subresource"] == "log"
    assert cells["username"] == 'CN=Doe, "Jane"'


async def test_chosen_columns_in_the_chosen_order(tmp_path: Path) -> None:
    text = await write_csv(
        tmp_path, [consumed(AWKWARD, cluster=None)], "--csv-columns", "verb,cluster,auditID"
    )
    assert list(csv.reader(io.StringIO(text))) == [["list", "UNKNOWN", "0b0e"]]


@pytest.mark.parametrize("columns", ["verb,colour", "", " , "])
def test_unknown_columns_are_config_errors(columns: str) -> None:
    with pytest.raises(ConfigError, match="--csv-columns"):
        build_settings(["--sink", "csv", "--csv-columns", columns], {})
