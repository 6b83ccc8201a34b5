"""Users' type checkers see the real API: ``mypy --strict`` on a user's script accepts
correct usage of the public names and reports the mistakes a typed API should catch."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
OK_FILE = HERE / "user_code_ok.py"
ERRORS_FILE = HERE / "user_code_errors.py"
_REPORT = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[\w-]+)\]$")
_EXPECTED = re.compile(r"#\s*error:\s*(?P<code>[\w-]+)\s*$")


@pytest.fixture(scope="module")
def mypy_report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """mypy's output for both user files, checked as a user would: against the installed
    package (found through site-packages, so only with its ``py.typed``), in strict mode."""
    cache = getattr(request.config, "cache", None)
    cache_dir = (
        cache.mkdir("mypy-user-typing") if cache is not None else tmp_path_factory.mktemp("mypy")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(HERE / "mypy.ini"),
            "--cache-dir",
            str(cache_dir),
            "--show-error-codes",
            "--no-error-summary",
            str(OK_FILE),
            str(ERRORS_FILE),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("user"),  # nowhere near src/: the package comes installed
    )
    assert result.returncode in (0, 1), result.stderr or result.stdout  # 2 = mypy crashed
    return result.stdout


def _reported(report: str, path: Path) -> set[tuple[int, str]]:
    found = set()
    for line in report.splitlines():
        match = _REPORT.match(line)
        if match and Path(match["file"]).name == path.name:
            found.add((int(match["line"]), match["code"]))
    return found


def test_correct_use_of_the_public_api_passes_a_strict_type_check(mypy_report: str) -> None:
    assert _reported(mypy_report, OK_FILE) == set(), mypy_report


def test_strict_type_check_reports_each_misuse_of_the_public_api(mypy_report: str) -> None:
    lines = ERRORS_FILE.read_text(encoding="utf-8").splitlines()
    expected = {
        (number, match["code"])
        for number, text in enumerate(lines, start=1)
        if (match := _EXPECTED.search(text))
    }
    saver_line = next(n for n, text in enumerate(lines, 1) if 'Saver(max_to_keep="five")' in text)
    assert (saver_line, "arg-type") in expected
    assert _reported(mypy_report, ERRORS_FILE) == expected, mypy_report


def test_the_type_checked_script_also_runs(tmp_path: Path) -> None:
    main = runpy.run_path(str(OK_FILE), run_name="user_code_ok")["main"]
    main(tmp_path)
