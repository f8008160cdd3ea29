"""Shared by the CLI tests: run `fpnas` in-process and read its one-line error."""

from __future__ import annotations

import pytest

from fpnas_dsl.cli import main


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting a user error: exit 2, one line on stderr, no traceback."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]
