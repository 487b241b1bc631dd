"""``audit-consumer rules test`` reads rotated, gzip-compressed audit logs (gzip known by its
magic bytes), and names what is wrong with input it cannot decode: real processes."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson

from audit_common.samples import sample_events

AUDIT_LOG = b"".join(orjson.dumps(e) + b"\n" for e in sample_events(200, seed=27))


def rules_test(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "consumers", "rules", "test", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_gzip_files_and_stdin_give_the_alerts_of_the_plain_log(tmp_path: Path) -> None:
    plain = tmp_path / "audit.log"
    plain.write_bytes(AUDIT_LOG)
    rotated = tmp_path / "audit-2026-12-07T00-00-00.000.log.gz"
    rotated.write_bytes(gzip.compress(AUDIT_LOG))
    unnamed = tmp_path / "audit.log.1"  # gzip whatever the name says
    unnamed.write_bytes(gzip.compress(AUDIT_LOG))

    expected = rules_test(str(plain))
    assert expected.returncode == 0, expected.stderr
    assert expected.stdout.count(b"\n") > 0, "the samples raise alerts"
    for result in (
        rules_test(str(rotated)),
        rules_test(str(unnamed)),
        rules_test("-", stdin=gzip.compress(AUDIT_LOG)),
    ):
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected.stdout
        assert result.stderr == expected.stderr
    both = rules_test(str(plain), str(rotated))
    assert both.stdout == expected.stdout * 2


def test_undecodable_input_is_named_without_a_traceback(tmp_path: Path) -> None:
    compressed = gzip.compress(AUDIT_LOG)
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(compressed[: len(compressed) // 2])
    corrupt = tmp_path / "corrupt.log.gz"
    corrupt.write_bytes(compressed[:10] + bytes(200) + compressed[210:])
    binary = tmp_path / "audit.log.zst"  # zstd's magic bytes and then anything
    binary.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64) + b"\n" + os.urandom(64))
    for path, reason in (
        (cut, "the gzip data ends early"),
        (corrupt, f"cannot read {corrupt}"),
        (binary, f"{binary} line 1: not text (bytes that are not UTF-8)"),
    ):
        result = rules_test(str(path))
        stderr = result.stderr.decode()
        assert result.returncode == 2, stderr
        assert reason in stderr, stderr
        assert "Traceback" not in stderr, stderr
