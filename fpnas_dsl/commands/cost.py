"""`fpnas cost SPACE [ARCH.json]`: FLOPS and params of one architecture.

    fpnas cost SPACE [ARCH.json] [--resolution N] [--count-pool] [--json]

Without ARCH.json, SPACE must be fixed (one network, `ir.count_networks`): its network is
priced.

ARCH.json is a readable architecture (`{"blocks": [{"kernel": 5, "act": "swish", ...}]}`,
optionally with `space`, `resolution`, `in_channels`, `classes`), such as the arch.json a
search writes (its other keys are ignored). It is priced at the input it records unless
`--resolution` says otherwise. FLOPS are multiply-accumulates (see `fpnas_dsl.cost`).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from fpnas_dsl.errors import FpnasError

if TYPE_CHECKING:
    from fpnas_dsl.ir import Architecture, Space


def register(sub: Any, name: str, help_text: str) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description="Print the FLOPS (multiply-accumulates of every convolution and fully "
        "connected layer) and the parameter count of one architecture of a space, from the "
        "exact analytical cost model.",
    )
    parser.add_argument("space", metavar="SPACE", help="a .space file, or a bundled space's name")
    parser.add_argument(
        "arch",
        metavar="ARCH.json",
        nargs="?",
        help="the architecture, as JSON (not needed when SPACE is a fixed network)",
    )
    parser.add_argument(
        "--resolution", type=int, metavar="N", help="price at this input resolution instead"
    )
    parser.add_argument(
        "--count-pool",
        action="store_true",
        help="also count one operation per element of every global pool (FBNet's convention)",
    )
    parser.add_argument(
        "--latency-table",
        metavar="TABLE.json",
        help="also print the latency a table of `fpnas latency` predicts",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def read_architecture(path: str) -> dict[str, Any]:
    """The JSON object of an architecture file; FpnasError if it is not one."""
    from fpnas_dsl.archfile import read_arch_doc

    return read_arch_doc(path)


def _architecture(args: argparse.Namespace) -> tuple[Space, Architecture]:
    """The space and the architecture to price: ARCH.json's, or a fixed space's one."""
    from fpnas_dsl.archfile import arch_from_blocks, input_fields, load_fixed
    from fpnas_dsl.parser import load_space

    if args.arch is None:
        return load_fixed(
            args.space,
            resolution=args.resolution,
            advice=f"give the architecture to price: fpnas cost {args.space} ARCH.json",
        )
    doc = read_architecture(args.arch)
    # --resolution replaces what the file records: only the file's other fields count.
    fields = {
        k: v for k, v in doc.items() if not (k == "resolution" and args.resolution is not None)
    }
    recorded: dict[str, int] = dict(input_fields(fields, args.arch))
    if args.resolution is not None:
        recorded["resolution"] = args.resolution
    space = load_space(args.space, **recorded)
    name = doc.get("space", space.name)
    if name != space.name:
        raise FpnasError(
            f"{args.arch}: architecture of space {name!r}, not of {space.name!r} ({args.space})"
        )
    return space, arch_from_blocks(space, doc["blocks"], args.arch)


def run(args: argparse.Namespace) -> int:
    from fpnas_dsl.api import network_cost

    space, arch = _architecture(args)
    flops, params = network_cost(space, arch, count_pool=args.count_pool)
    latency: float | None = None
    if args.latency_table:
        from fpnas_dsl.ir import encode
        from fpnas_dsl.latency import latency_model

        model = latency_model(space, args.latency_table)
        latency = float(model.price(encode(space, arch)[None])[0])
        setting = (
            f"{model.table.backend} on {model.table.device}, {model.table.threads} "
            f"thread(s), batch {model.table.batch}"
        )
    if args.json:
        out = {
            "space": space.name,
            "resolution": space.resolution,
            "in_channels": space.in_channels,
            "classes": space.classes,
            "blocks": len(arch.blocks),
            "flops": flops,
            "params": params,
            "count_pool": bool(args.count_pool),
        }
        if latency is not None:
            out["latency_s"] = latency
        print(json.dumps(out))
        return 0
    pool = ", global pools counted" if args.count_pool else ""
    print(
        f"space {space.name}: {len(arch.blocks)} blocks, input {space.in_channels}x"
        f"{space.resolution}x{space.resolution}, {space.classes} classes"
    )
    print(f"FLOPS   {flops / 1e6:,.2f} M multiply-accumulates ({flops:,}){pool}")
    print(f"params  {params / 1e6:,.3f} M ({params:,})")
    if latency is not None:
        from fpnas_dsl.latency import format_seconds

        print(f"latency {format_seconds(latency)} predicted ({setting})")
    return 0
