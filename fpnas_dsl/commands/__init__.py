"""One module per CLI subcommand. Each exposes `register(subparsers)` (adds its parser
and sets `func`) and keeps the work in the library, so notebooks can call it too."""

import argparse


def add_space_option(p: argparse.ArgumentParser) -> None:
    """`--space`, for commands that read an architecture file written without its IR."""
    p.add_argument(
        "--space",
        metavar="SPACE",
        help="read a minimal ARCH.json (blocks without the compiled 'ir') against this "
        ".space file or bundled space",
    )
