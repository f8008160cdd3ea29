"""Shared by the CLI tests: run `fpnas` in-process and read its one-line error."""

from __future__ import annotations

import pytest

from fpnas_dsl.cli import main


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    """Run the CLI expecting a user error: exit 2 (or `code`: 1 for a failure at run
    time), one line on stderr, no traceback."""
    got = main(argv)
    captured = capsys.readouterr()
    assert got == code, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]
