"""An ``optin`` error is one ``error:`` line on stderr, printed as written, with exit code 1; usage errors are 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from experiments.cli.common import EXIT_AUDIT_FAILED, EXIT_ERROR


def _optin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from experiments.cli.app import app; app()", *args], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])


def test_an_error_is_one_line_on_stderr_and_nothing_on_stdout(tmp_path: Path) -> None:
    missing = tmp_path / "no [scope] here"
    done = _optin("consent", "off", "-w", str(missing))
    assert done.returncode == EXIT_ERROR
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {missing}: no such workspace folder"]


def test_usage_errors_and_audit_failures_have_codes_of_their_own() -> None:
    assert _optin("consent", "sideways").returncode == 2
    assert len({EXIT_ERROR, 2, EXIT_AUDIT_FAILED, 130}) == 4
