"""`fpnas export RUN_DIR|TRAIN_DIR|ARCH.json|SPACE --format onnx|torchscript|json -o FILE`."""

from __future__ import annotations

import argparse
from typing import Any

from fpnas_dsl.commands import add_space_option

FORMATS = ("onnx", "torchscript", "json")


def register(sub: Any, name: str, help_text: str) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Write an architecture as a standalone network and check the file before "
            "reporting success (ONNX: onnx.checker and ONNX Runtime against PyTorch; "
            "TorchScript: torch.jit.load against PyTorch; batch sizes 1 and 8). A search run "
            "directory exports with the supernet's weights, a training directory with its "
            "trained weights, a bare arch.json or a fixed space (a .space file or bundled "
            "name with one network) freshly initialised, with batch-norm statistics measured "
            "on random inputs so that the logits are of unit scale, unless --weights is given."
        ),
    )
    p.add_argument("source", metavar="RUN_DIR|TRAIN_DIR|ARCH.json|SPACE")
    # Checked by the library, not by argparse `choices`, so that a wrong format is the
    # same one-line error as every other bad input.
    p.add_argument("--format", "-f", required=True, metavar="{onnx,torchscript,json}")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="state_dict of the standalone network (e.g. model.pt of `fpnas train`)",
    )
    p.add_argument(
        "--opset", type=int, default=17, metavar="N", help="ONNX opset, 13..20 (default 17)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        metavar="X",
        help="max |exported - PyTorch| / max |PyTorch logit| accepted by the check (default 1e-4)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh init and test inputs")
    add_space_option(p)
    p.add_argument(
        "--data",
        metavar="SPEC",
        help="the data the network is for (fashion-mnist, imagefolder:PATH, synthetic): its "
        "preprocessing (mean, std) is recorded in the file; default: the run's",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fpnas_dsl.api import export_network

    report = export_network(
        args.source,
        args.format,
        args.output,
        weights=args.weights,
        opset=args.opset,
        tolerance=args.tolerance,
        seed=args.seed,
        space=args.space,
        data=args.data,
    )
    what = {
        "onnx": f"ONNX, opset {report.opset}, dynamic batch axis",
        "torchscript": f"TorchScript, {report.method}",
        "json": "architecture JSON",
    }[report.format]
    print(f"wrote {report.path} ({what}): {_size(report.size_bytes)}")
    print(
        f"  architecture: space {report.space}, input {report.in_channels}x{report.resolution}"
        f"x{report.resolution}, {report.classes} classes"
    )
    print(
        f"  FLOPS {report.flops / 1e6:,.2f} M (multiply-accumulates), "
        f"params {report.params / 1e6:,.3f} M ({report.params:,})"
    )
    print(f"  input: {report.metadata['fpnas.input']}; {report.metadata['fpnas.preprocessing']}")
    if report.format != "json":
        print(f"  weights: {report.weights}")
        checked = "ONNX Runtime" if report.format == "onnx" else "torch.jit.load"
        diffs = ", ".join(f"{r:.1e} (batch {b})" for b, r in report.max_rel_diff.items())
        print(
            f"  verified with {checked} against PyTorch on random inputs: max |diff| / max "
            f"|logit| {diffs} <= {args.tolerance:g}; max |logit| {report.output_scale:.3g}"
        )
        if report.checker:
            print(f"  passed {report.checker}")
    return 0


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"
