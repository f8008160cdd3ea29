"""The project's own error types and the exit codes the CLI gives them.

- `FpnasError` (exit 2): bad input, missing data, a refused request. Never a bug.
- `RunError` (exit 1): the input was fine but the work failed at run time (a search or a
  training diverged, an export failed its check, a file could not be written).
- `Interrupted` (exit 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM): the command was
  asked to stop, and first saved what it could.

The CLI prints any of them as one message, never a traceback.
"""

from __future__ import annotations

#: How many characters of a source line an error shows: a window around the column.
WINDOW = 100


class FpnasError(Exception):
    """A user-facing error: bad input, missing data, a refused request. Never a bug."""

    exit_code = 2


class RunError(FpnasError):
    """A failure at run time with valid input (divergence, a failed check, a full disk)."""

    exit_code = 1


class Interrupted(FpnasError):
    """The command was asked to stop (Ctrl-C, SIGTERM); what could be saved was saved."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def clip(text: str, limit: int = 300) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis says what was cut)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text) - limit + 1:,} more characters)"


def window(text: str, column: int, width: int = WINDOW) -> tuple[str, int]:
    """A window of at most `width` characters of `text` around 1-based `column`, and the
    column's 1-based position in it; '…' marks a cut at either end."""
    if len(text) <= width:
        return text, column
    half = width // 2
    start = max(0, min(column - 1 - half, len(text) - width))
    end = min(len(text), start + width)
    piece = text[start:end]
    offset = start
    if start > 0:
        piece = "…" + piece[1:]
    if end < len(text):
        piece = piece[:-1] + "…"
    return piece, column - offset


class SpaceError(FpnasError):
    """An error in a .space file, positioned: file:line:column, the line, a caret."""

    def __init__(
        self,
        message: str,
        *,
        file: str = "<string>",
        line: int = 0,
        column: int = 0,
        source: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.source = source
        #: An optional suggestion printed under the caret ("help: ...").
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.file}:{self.line}:{self.column}: error: {clip(self.message, 500)}"
        help_line = f"\n  help: {clip(self.hint, 500)}" if self.hint else ""
        if not self.source or self.line < 1:
            return head + help_line
        # Lines as the parser counts them: "\n" only (splitlines() would also split on
        # form feeds and other separators and show the wrong line).
        lines = self.source.split("\n")
        if self.line > len(lines):
            return head + help_line
        raw = lines[self.line - 1].rstrip("\r").expandtabs(1)
        # One character per column, so the caret stays aligned; no control characters and
        # no replacement characters (what undecodable bytes became).
        text = "".join(ch if ch.isprintable() and ch != "\ufffd" else "?" for ch in raw)
        text, column = window(text, max(self.column, 1))
        gutter = f"{self.line:>5} | "
        caret = " " * (len(gutter) + max(column - 1, 0)) + "^"
        return f"{head}\n{gutter}{text}\n{caret}{help_line}"
