"""The file source's view of a log directory as lumberjack leaves it (pure logic on real files)."""

from __future__ import annotations

from pathlib import Path

from relay.sources.file import _Reader, listing, locate
from tests.support.audit_log import LumberjackLog, log_lines


def test_rotated_files_come_oldest_first_then_the_live_one(tmp_path: Path) -> None:
    log = LumberjackLog(tmp_path / "audit.log")
    (tmp_path / "other-2026-12-07T23-00-00.000.log").touch()  # another log's backup
    log.write(b"x\n")
    first = log.rotate(compress=True)
    second = log.rotate()
    # Being compressed: lumberjack wrote the .gz and has not removed the original yet.
    second.with_name(second.name + ".gz").write_bytes(b"partial")
    assert [f.path for f in listing(log.path)] == [first, second, log.path]


def test_a_position_finds_its_file_after_rename_and_gzip(tmp_path: Path) -> None:
    log = LumberjackLog(tmp_path / "audit.log")
    log.write(b"".join(log_lines(5, seed=4)))
    files = listing(log.path)
    reader = _Reader(files[-1], 0, None, 0)
    lines, at_end = reader.lines(final=False)
    reader.close()
    assert (len(lines), at_end) == (5, True)
    position = reader.position()
    log.rotate(compress=True)
    log.write(b"".join(log_lines(2, seed=5)))
    assert locate(listing(log.path), position) == 0  # the .gz, by its first line
