"""The fields benchmark: every field measured, the slowest printed as multiples of the baseline."""

from __future__ import annotations

import pytest

from bench.fields import main
from consumers.rules.fields import FIELDS


def test_prints_the_baseline_and_the_slowest_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--events", "30", "--repeat", "1", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"30 sample events, {len(FIELDS)} fields, best of 1 passes"
    assert lines[1].startswith("baseline [event.get('verb', '')]")
    assert lines[2].startswith("fields within x3 of the baseline: ")
    slowest = lines[3:]
    assert len(slowest) == 3
    assert all(line.split()[0] in FIELDS and line.split()[-1].startswith("x") for line in slowest)
