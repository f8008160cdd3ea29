"""The project's own error types. The CLI prints them as one message and exits 2."""

from __future__ import annotations


class FpnasError(Exception):
    """A user-facing error: bad input, missing data, a refused request. Never a bug."""

    exit_code = 2


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
        head = f"{self.file}:{self.line}:{self.column}: error: {self.message}"
        help_line = f"\n  help: {self.hint}" if self.hint else ""
        if not self.source or self.line < 1:
            return head + help_line
        # Lines as the parser counts them: "\n" only (splitlines() would also split on
        # form feeds and other separators and show the wrong line).
        lines = self.source.split("\n")
        if self.line > len(lines):
            return head + help_line
        raw = lines[self.line - 1].rstrip("\r").expandtabs(1)
        # One character per column, so the caret stays aligned; no control characters.
        text = "".join(ch if ch.isprintable() else "?" for ch in raw)
        gutter = f"{self.line:>5} | "
        caret = " " * (len(gutter) + max(self.column - 1, 0)) + "^"
        return f"{head}\n{gutter}{text}\n{caret}{help_line}"
