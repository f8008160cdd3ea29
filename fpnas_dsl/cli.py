"""The `fpnas` command line: a thin shell over the library.

Every failure ends in one message on stderr, never a traceback, and an exit code that says
what kind of failure it was:

- 0: done;
- 2: bad input (a missing or unreadable file, an invalid setting, a refused request) and
  usage errors, including `fpnas` with no command (`FpnasError`);
- 1: a failure at run time with valid input: a search or training that diverged, an export
  that failed its check, a file that could not be written, memory that ran out
  (`RunError`), and any unexpected error (a bug: the message says so, and
  `FPNAS_DEBUG=1` shows its traceback);
- 130 (Ctrl-C, SIGINT) and 143 (SIGTERM): asked to stop (`Interrupted`); a search or a
  training first finishes its iteration and checkpoints.

A compiled core that cannot be imported (not built, or a source tree without it shadowing
the installed package: `fpnas_dsl.native`) and a missing third-party module are exit 2,
with what to do; neither is a bug in fpnas.

Subcommands live in `fpnas_dsl.commands.<name>` and are imported lazily so that
`fpnas compile` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from fpnas_dsl import __version__
from fpnas_dsl.errors import FpnasError, Interrupted, RunError, clip

#: subcommand -> (module under fpnas_dsl.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "compile": ("compile", "parse and validate a .space file and summarise the space"),
    "cost": ("cost", "FLOPS and params of one architecture"),
    "latency": ("latency", "measure a latency table of a space on this machine"),
    "search": ("search", "search a space with FP-NAS"),
    "export": ("export", "export an architecture to ONNX, TorchScript or JSON"),
    "train": ("train", "train an architecture from scratch"),
    "show": ("show", "draw an architecture or a search run"),
    "selfcheck": ("selfcheck", "check the C++ distribution core"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpnas",
        description="Compile .space search spaces and search them with FP-NAS.",
    )
    parser.add_argument("--version", action="version", version=f"fpnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        # Command modules import torch inside their functions, never at import time.
        mod = importlib.import_module(f"fpnas_dsl.commands.{module}")
        mod.register(sub, name, help_text)
    return parser


#: Longest line of an error message printed as is (longer ones are cut, with a note).
MESSAGE_LINE_LIMIT = 1000


def format_message(text: str) -> str:
    """An error message fit for a terminal: no line is longer than MESSAGE_LINE_LIMIT."""
    return "\n".join(
        line if len(line) <= MESSAGE_LINE_LIMIT else clip(line, MESSAGE_LINE_LIMIT)
        for line in text.split("\n")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments:
        parser.print_usage(sys.stderr)
        print("fpnas: give a command; `fpnas --help` describes them", file=sys.stderr)
        return 2
    args = parser.parse_args(arguments)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    name = f"fpnas {args.command}"
    try:
        code: int = args.func(args)
    except FpnasError as err:
        print(f"{name}: {format_message(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    except MemoryError:
        print(f"{name}: out of memory; try a smaller space, batch or input", file=sys.stderr)
        return RunError.exit_code
    except BrokenPipeError:
        # The reader of standard output went away (`fpnas compile X | head`): stop quietly.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return RunError.exit_code
    except OSError as err:
        # A file the run reads or writes went away, or the disk is full or read-only: the
        # machine's state, which the message names, rather than a bug.
        if os.environ.get("FPNAS_DEBUG"):
            raise
        print(
            f"{name}: a file operation failed ({clip(str(err))}); check that the path "
            "exists, is writable and that its disk has room",
            file=sys.stderr,
        )
        return RunError.exit_code
    except Exception as err:
        if os.environ.get("FPNAS_DEBUG"):
            raise
        # A third-party module missing is the environment's fault, not fpnas's.
        missing = (err.name or "").partition(".")[0] if isinstance(err, ImportError) else ""
        if isinstance(err, ModuleNotFoundError) and missing not in ("", "fpnas_dsl"):
            print(
                f"{name}: the Python package `{missing}` that fpnas needs is not installed "
                f"({clip(str(err))}); install fpnas with its dependencies: `pip install .`",
                file=sys.stderr,
            )
            return FpnasError.exit_code
        what = f"{type(err).__name__}: {err}"
        if "out of memory" in str(err).lower():
            print(f"{name}: out of memory ({clip(what)})", file=sys.stderr)
            return RunError.exit_code
        print(
            f"{name}: internal error, a bug in fpnas ({clip(what)}); run with FPNAS_DEBUG=1 "
            "to see where",
            file=sys.stderr,
        )
        return RunError.exit_code
    return code
