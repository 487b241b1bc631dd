from __future__ import annotations

from pathlib import Path

import pytest

from audit_common.errors import ConfigError, SinkError
from consumers.settings import build_settings
from consumers.sinks.output import OutputSettings, OutputStream
from tests.support.files import file_size_limit


def records(count: int, size: int = 100) -> list[bytes]:
    return [f"{index:05d}".encode().ljust(size - 1, b"x") + b"\n" for index in range(count)]


def files_of(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + "*"))


async def write_all(
    settings: OutputSettings,
    batches: list[list[bytes]],
    header: bytes = b"",
    quote: bytes | None = None,
) -> None:
    stream = OutputStream(settings, header=header, quote=quote)
    await stream.open()
    for batch in batches:
        await stream.write(batch)
        await stream.flush()
    await stream.close()


async def test_rotation_keeps_whole_records_and_every_one_of_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = records(50)
    await write_all(OutputSettings(path, rotate_bytes=1000, keep=10), [written[:23], written[23:]])
    files = files_of(path)
    assert [f.name for f in files] == ["audit.jsonl"] + [f"audit.jsonl.{i}" for i in range(1, 5)]
    assert all(f.stat().st_size <= 1000 for f in files)
    # Oldest first: FILE.4 ... FILE.1, then FILE.
    ordered = [path.with_name(f"audit.jsonl.{i}") for i in range(4, 0, -1)] + [path]
    assert b"".join(f.read_bytes() for f in ordered) == b"".join(written)


async def test_keep_bounds_the_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = records(50)
    await write_all(OutputSettings(path, rotate_bytes=1000, keep=2), [written])
    assert [f.name for f in files_of(path)] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    kept = b"".join(path.with_name(n).read_bytes() for n in ("audit.jsonl.2", "audit.jsonl.1"))
    assert kept + path.read_bytes() == b"".join(written[20:])


async def test_a_record_larger_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    big = b"B" * 3000 + b"\n"
    await write_all(OutputSettings(path, rotate_bytes=1000, keep=5), [[b"a\n", big, b"c\n"]])
    assert path.with_name("audit.jsonl.2").read_bytes() == b"a\n"
    assert path.with_name("audit.jsonl.1").read_bytes() == big
    assert path.read_bytes() == b"c\n"


async def test_every_rotated_file_starts_with_the_header(tmp_path: Path) -> None:
    path = tmp_path / "audit.csv"
    await write_all(OutputSettings(path, rotate_bytes=250, keep=5), [records(4)], header=b"h\n")
    for file in files_of(path):
        assert file.read_bytes().startswith(b"h\n00"), file


async def test_a_restart_appends_and_cuts_a_half_written_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')  # a crash in the middle of a write
    await write_all(OutputSettings(path), [[b'{"c":3}\n']])
    assert path.read_bytes() == b'{"a":1}\n{"c":3}\n'


async def test_a_half_written_record_longer_than_the_read_window_is_cut_too(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"a":1}\n{"big":"' + b"x" * 200_000)
    await write_all(OutputSettings(path), [[b'{"c":3}\n']])
    assert path.read_bytes() == b'{"a":1}\n{"c":3}\n'


@pytest.mark.parametrize(
    ("kept", "torn"),
    [
        # Cut after a line feed inside quotes: by lines, half the row would stay.
        (b'a,"x\ny"\n', b'b,"first\nsec'),
        (b'a,"x\ny"\n', b'b,"first line\n'),
        (b'a,"x\ry"\nb,"q""\n""q"\n', b'c,"""\n'),
        (b"", b'a,"only\n'),
        # The quotes before a long torn record, past the read window, still count.
        (b'a,"x\ny"\n', b'b,"' + b"z\n" * 100_000),
    ],
)
async def test_csv_recovery_cuts_back_to_the_last_whole_record_as_csv_reads_it(
    tmp_path: Path, kept: bytes, torn: bytes
) -> None:
    path = tmp_path / "audit.csv"
    path.write_bytes(kept + torn)
    await write_all(OutputSettings(path), [[b"next,row\n"]], quote=b'"')
    assert path.read_bytes() == kept + b"next,row\n"


async def test_an_unwritable_file_is_a_sink_error(tmp_path: Path) -> None:
    stream = OutputStream(OutputSettings(tmp_path / "missing-dir" / "audit.jsonl"))
    with pytest.raises(SinkError, match="missing-dir"):
        await stream.open()
    await stream.close()


async def test_a_write_that_fails_part_way_leaves_whole_records_for_the_retry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    stream = OutputStream(OutputSettings(path))
    await stream.open()
    await stream.write(records(10))
    await stream.flush()
    with file_size_limit(1550), pytest.raises(SinkError):
        await stream.write(records(10))  # 550 of its 1000 bytes fit
    assert path.read_bytes() == b"".join(records(10))
    await stream.write(records(10))  # the retry, with room again
    await stream.flush()
    await stream.close()
    assert path.read_bytes() == b"".join(records(10) * 2)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rotate-bytes", "1000"], "--rotate-bytes needs --output"),
        (["--output", "x", "--keep", "-1"], "--keep"),
    ],
)
def test_rotation_flag_errors(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings(["--sink", "jsonl", *flags], {})
