"""``audit-consumer rules test``: in process, and as the real command."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from consumers.__main__ import main
from tests.support.corpus import corpus_dir
from tests.support.events import event_list, logged
from tests.support.kafka import REPO

ONE_RULE = """\
- list: watched_verbs
  items: [create]
- rule: Anything Created
  desc: every create
  condition: ka.verb in (watched_verbs)
  output: "%ka.user.name created %ka.target.resource"
  priority: INFO
  source: k8s_audit
  tags: [test]
"""


@dataclass(frozen=True)
class Files:
    """Audit log files of one event each: an exec and an attach as they start, a namespace
    created by some-user."""

    exec: Path
    attach: Path
    namespace: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    directory = tmp_path_factory.mktemp("events")
    made = Files(directory / "exec.json", directory / "attach.json", directory / "ns.json")
    made.exec.write_bytes(orjson.dumps(logged("exec")[0]) + b"\n")
    made.attach.write_bytes(orjson.dumps(logged("attach")[0]) + b"\n")
    made.namespace.write_bytes(orjson.dumps(logged("another user creates a namespace")[0]))
    return made


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict], str]:
    code = main(["rules", "test", *args])
    captured = capsys.readouterr()
    alerts = [orjson.loads(line) for line in captured.out.splitlines()]
    return code, alerts, captured.err


def test_alerts_of_the_default_rules_in_falcos_json_format(
    capsys: pytest.CaptureFixture[str],
    files: Files,
) -> None:
    code, alerts, err = run(capsys, str(files.exec), str(files.attach))
    assert code == 0
    assert [alert["rule"] for alert in alerts] == ["Shell Into Pod", "Shell Into Pod"]
    first = alerts[0]
    assert set(first) >= {"time", "rule", "priority", "output", "source", "tags", "output_fields"}
    assert first["priority"] == "Notice"
    assert first["source"] == "k8s_audit"
    assert ": Notice minikube-user opened exec into pod default/nginx-" in first["output"]
    assert first["output_fields"]["ka.user.name"] == "minikube-user"
    assert "2 events read from 2 files, 2 alerts" in err
    assert "2  Shell Into Pod" in err


def test_rules_files_load_in_order_and_min_priority_skips_lower_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: Files
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(ONE_RULE)
    more = tmp_path / "more.yaml"  # the second file widens the first one's list
    more.write_text("- list: watched_verbs\n  items: [get]\n  append: true\n")
    get = tmp_path / "get.json"
    get.write_bytes(orjson.dumps({**logged("exec")[0], "verb": "get"}))
    code, alerts, _ = run(capsys, "--rules", str(rules), str(files.namespace), str(get))
    assert code == 0
    assert [a["output"].split(": Informational ")[1] for a in alerts] == [
        "some-user created namespaces"
    ]
    code, alerts, _ = run(capsys, "--rules", str(rules), "--rules", str(more), str(get))
    assert [a["rule"] for a in alerts] == ["Anything Created"]
    code, alerts, err = run(
        capsys, "--rules", str(rules), "--min-priority", "notice", str(files.namespace)
    )
    assert (code, alerts) == (0, [])
    assert "1 events read from 1 file, 0 alerts" in err


def test_default_names_the_shipped_rules_which_a_later_file_extends(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: Files
) -> None:
    """How a deployment adds its own to the shipped rules: ``--rules default --rules mine``."""
    code, alerts, _ = run(capsys, "--rules", "default", str(files.namespace))
    assert (code, [a["rule"] for a in alerts]) == (0, ["Unexpected Namespace Created"])
    mine = tmp_path / "mine.yaml"
    mine.write_text("- list: expected_namespaces\n  items: [foo]\n  append: true\n")
    code, alerts, _ = run(capsys, "--rules", "default", "--rules", str(mine), str(files.namespace))
    assert (code, alerts) == (0, [])


def test_event_lists_single_documents_and_json_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    exec_event = logged("exec")[0]
    listed = tmp_path / "list.json"
    listed.write_bytes(event_list([exec_event, exec_event]))
    pretty = tmp_path / "pretty.json"
    pretty.write_bytes(orjson.dumps(exec_event, option=orjson.OPT_INDENT_2))
    lines = tmp_path / "audit.log"
    lines.write_bytes(b"\n".join(orjson.dumps(exec_event) for _ in range(3)) + b"\n\n")
    lists = tmp_path / "webhook.log"  # one EventList per line
    lists.write_bytes(event_list([exec_event]) * 2)
    code, alerts, err = run(capsys, str(listed), str(pretty), str(lines), str(lists))
    assert code == 0
    assert len(alerts) == 8
    assert "8 events read from 4 files, 8 alerts" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"kind":"Event"}\n{not json\n', "line 2: not JSON"),
        (b"[1, 2]\n", "line 1: a JSON list, not an audit Event"),
        (b'{"kind":"EventList","items":[{}, 3]}', "line 1: item 1 is no JSON object"),
        (b'{\n  "kind": "Event",\n  "verb": \n}\n', ": not JSON: "),
    ],
)
def test_an_events_file_that_cannot_be_parsed_exits_2_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, expected: str
) -> None:
    broken = tmp_path / "broken.log"
    broken.write_bytes(content)
    code, _, err = run(capsys, str(broken))
    assert code == 2
    assert err.startswith(f"audit-consumer: error: {broken}")
    assert expected in err


def test_a_missing_events_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nowhere.json"))
    assert code == 2
    assert f"audit-consumer: error: cannot read {tmp_path / 'nowhere.json'}" in err


def test_a_rules_file_that_cannot_be_loaded_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: Files
) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text(ONE_RULE.replace("ka.verb in (watched_verbs)", "ka.verb in (create"))
    code, alerts, err = run(capsys, "--rules", str(rules), str(files.exec))
    assert (code, alerts) == (2, [])
    assert err.startswith("audit-consumer: error: ")
    assert "bad.yaml" in err
    assert "Anything Created" in err


def test_usage(capsys: pytest.CaptureFixture[str], files: Files) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rules", "test", "--min-priority", "loud", str(files.exec)])
    assert exited.value.code == 2
    assert "'loud' is no priority" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["rules", "test", "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert "EVENTS_FILE" in help_text and "--rules FILE" in help_text


def test_the_command_reads_stdin_and_all_of_falcos_traces(files: Files) -> None:
    traces = sorted(str(path) for path in corpus_dir().glob("*.json"))
    count = sum(
        1 for name in traces for line in Path(name).read_bytes().splitlines() if line.strip()
    )
    completed = subprocess.run(
        [sys.executable, "-m", "consumers", "rules", "test", *traces, "-"],
        input=files.exec.read_bytes(),
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()
    alerts = [orjson.loads(line) for line in completed.stdout.splitlines()]
    assert sum(alert["rule"] == "Shell Into Pod" for alert in alerts) == 3  # exec, attach, stdin
    assert f"{count + 1} events read from {len(traces) + 1} files" in completed.stderr.decode()
