from __future__ import annotations

from pathlib import Path

import orjson

from consumers.events import decode
from consumers.settings import build_settings
from relay.events.build import encode_event
from tests.support.events import audit_events


async def test_one_event_per_line_as_received(tmp_path: Path) -> None:
    output = tmp_path / "audit.jsonl"
    values = [encode_event(e, "audit.k8s.io/v1") for e in audit_events()]
    pretty = orjson.dumps({"auditID": "p", "verb": "get"}, option=orjson.OPT_INDENT_2)
    events = [decode(v, [], topic="t", partition=0, offset=i) for i, v in enumerate(values)]
    events.append(decode(pretty, [], topic="t", partition=0, offset=len(values)))
    _, sink, _ = build_settings(["--sink", "jsonl", "--output", str(output)], {})
    async with sink:
        await sink.write(events)
        await sink.flush()
    lines = output.read_bytes().splitlines()
    assert lines[:-1] == values
    assert orjson.loads(lines[-1]) == {"auditID": "p", "verb": "get"}
