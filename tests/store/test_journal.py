"""The resume journal file: written whole and atomically, read back exactly, refused when
it is not a journal, and its crash leftovers cleaned without touching anything else."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from trainhooks._store._journal import (
    JOURNAL_NAME,
    MAX_JOURNAL_BYTES,
    read_journal,
    remove_journal_temps,
    write_journal,
)


def test_windows_round_trip_exactly_including_non_finite_numbers(tmp_path: Path) -> None:
    windows = {10: {11: {"loss": 0.1 + 0.2, "n": 11.0}, 12: {}}, 5: {6: {"x": -math.inf}}}
    write_journal(tmp_path, windows)
    back = read_journal(tmp_path)
    assert back == windows
    write_journal(tmp_path, {3: {4: {"loss": math.nan}}})
    assert math.isnan(read_journal(tmp_path)[3][4]["loss"])
    assert [p.name for p in tmp_path.iterdir()] == [JOURNAL_NAME]  # no temp file left


def test_a_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    assert read_journal(tmp_path) == {}
    assert read_journal(tmp_path / "absent") == {}


@pytest.mark.parametrize(
    "content",
    [
        b"{ not json",
        b'{"format": "something else", "version": 1, "windows": {}}',
        b'{"format": "trainhooks.resume-journal", "version": 2, "windows": {}}',
        b'{"format": "trainhooks.resume-journal", "version": 1, "windows": {"x": {}}}',
        b'{"format": "trainhooks.resume-journal", "version": 1, "windows": {"1": {"2": 3}}}',
        b'{"format": "trainhooks.resume-journal", "version": 1,'
        b' "windows": {"1": {"2": {"loss": "1.5"}}}}',
        b"[]",
    ],
)
def test_anything_but_a_journal_is_refused_naming_the_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / JOURNAL_NAME).write_bytes(content)
    with pytest.raises(ValueError, match=JOURNAL_NAME):
        read_journal(tmp_path)


def test_an_oversized_file_is_refused_without_being_parsed(tmp_path: Path) -> None:
    with open(tmp_path / JOURNAL_NAME, "wb") as fh:
        fh.truncate(MAX_JOURNAL_BYTES + 10)
    with pytest.raises(ValueError, match="larger than"):
        read_journal(tmp_path)


def test_only_the_journal_s_own_temp_names_are_removed(tmp_path: Path) -> None:
    ours = f".{JOURNAL_NAME}.tmp-{'ab' * 16}"
    others = [f".{JOURNAL_NAME}.tmp-mine", "notes.tmp-" + "0" * 32, JOURNAL_NAME]
    for name in [ours, *others]:
        (tmp_path / name).write_text("x")
    assert remove_journal_temps(tmp_path) == [ours]
    assert sorted(os.listdir(tmp_path)) == sorted(others)
    assert remove_journal_temps(tmp_path / "absent") == []
