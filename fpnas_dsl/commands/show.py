"""`fpnas show ARCH.json|RUN_DIR [-o PREFIX]`: pictures of an architecture and a run."""

from __future__ import annotations

import argparse
from typing import Any

from fpnas_dsl.commands import add_space_option


def register(sub: Any, name: str, help_text: str) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Draw an architecture as in Fig. B.5 of the paper (one box per MBConv block; "
            "colour = kernel size, height = channels, hatching = swish/hard-swish, attention "
            "splits on top, bars between stages) as PNG and SVG, and print its blocks as a "
            "table. For a search run directory, also plot entropy, K, expected FLOPS and "
            "accuracy per epoch; for a training directory, loss and accuracy per epoch."
        ),
    )
    p.add_argument("source", metavar="ARCH.json|RUN_DIR")
    p.add_argument(
        "-o",
        "--output",
        metavar="PREFIX",
        help="write PREFIX.png, PREFIX.svg (and PREFIX-search.png or PREFIX-training.png); "
        "default: beside ARCH.json, or RUN_DIR/arch.png, RUN_DIR/search.png",
    )
    add_space_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fpnas_dsl.show import show

    report = show(args.source, args.output, space=args.space)
    if report.summary:
        print(report.summary)
    if report.table:
        print(report.table)
    for path in report.written:
        print(f"wrote {path}")
    return 0
