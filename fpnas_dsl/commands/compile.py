"""`fpnas compile SPACE`: parse and validate a space, print what a researcher checks first.

    fpnas compile SPACE [--resolution N] [--in-channels N] [--classes N] [--json] [--ir FILE]

SPACE is a path or the name of a bundled space (`fpnas compile fbnetv2_f`). The summary is
text by default, one JSON object with `--json`; `--ir FILE` also writes the compiled IR as
JSON (`-` for standard output, instead of the summary), creating missing directories.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fpnas_dsl.runfiles import write_text_atomic


def register(sub: Any, name: str, help_text: str) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description="Parse and validate a .space file and summarise the space: blocks, "
        "decisions, variables and cardinalities, number of architectures, uniform entropy, "
        "initial K, alpha parameters (FD/JD), and FLOPS/params once the cost model exists.",
    )
    parser.add_argument("space", metavar="SPACE", help="a .space file, or a bundled space's name")
    parser.add_argument("--resolution", type=int, metavar="N", help="override the input resolution")
    parser.add_argument("--in-channels", type=int, metavar="N", help="override the input channels")
    parser.add_argument("--classes", type=int, metavar="N", help="override the number of classes")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--latency-table",
        metavar="TABLE.json",
        help="also print the latency range from a table of `fpnas latency`",
    )
    parser.add_argument(
        "--ir", metavar="FILE", help="write the compiled IR as JSON to FILE ('-': standard output)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fpnas_dsl.api import load_space, summarize
    from fpnas_dsl.summary import render

    space = load_space(
        args.space,
        resolution=args.resolution,
        in_channels=args.in_channels,
        classes=args.classes,
    )
    if args.ir == "-":
        sys.stdout.write(json.dumps(space.portable_dump(), indent=2) + "\n")
        return 0
    summary = summarize(space)
    latency = None
    if args.latency_table:
        from fpnas_dsl.latency import latency_model

        model = latency_model(space, args.latency_table)
        latency = {**model.summary(), **latency_setting(model.table)}
        summary["latency"] = latency
    if args.ir:
        # Missing directories are created, as `fpnas search --out` creates its run
        # directory; the file appears whole or not at all.
        write_text_atomic(Path(args.ir), json.dumps(space.portable_dump(), indent=2) + "\n")
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(render(summary, space) + "\n")
        if latency is not None:
            sys.stdout.write(latency_line(latency) + "\n")
        if args.ir:
            sys.stdout.write(f"IR written to {args.ir}\n")
    return 0


def latency_setting(table: Any) -> dict[str, Any]:
    return {
        "backend": table.backend,
        "device": table.device,
        "threads": table.threads,
        "batch": table.batch,
    }


def latency_line(latency: dict[str, Any]) -> str:
    from fpnas_dsl.latency import format_seconds

    return (
        f"latency    {format_seconds(latency['latency_min'])} min, "
        f"{format_seconds(latency['latency_median'])} median, "
        f"{format_seconds(latency['latency_max'])} max (table: {latency['backend']} on "
        f"{latency['device']}, {latency['threads']} thread(s), batch {latency['batch']})"
    )
