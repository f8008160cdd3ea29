"""The `fpnas` command line: a thin shell over the library.

Every user-facing failure is an `FpnasError`: printed to stderr as one message, exit 2,
no traceback. Subcommands live in `fpnas_dsl.commands.<name>` and are imported lazily so
that `fpnas compile` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fpnas_dsl import __version__
from fpnas_dsl.errors import FpnasError

#: subcommand -> (module under fpnas_dsl.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "compile": ("compile", "parse and validate a .space file and summarise the space"),
    "cost": ("cost", "FLOPS and params of one architecture"),
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        code: int = args.func(args)
    except FpnasError as err:
        print(f"fpnas {args.command}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("fpnas: interrupted", file=sys.stderr)
        return 130
    return code
