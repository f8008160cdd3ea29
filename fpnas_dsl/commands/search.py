"""`fpnas search SPACE --target-flops F ...` and `fpnas search --resume RUN_DIR`, alone or
on every rank of `torchrun --nproc-per-node N -m fpnas_dsl search ...`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fpnas_dsl.errors import FpnasError

if TYPE_CHECKING:
    from fpnas_dsl.search.config import SearchConfig

#: flag -> (type, help); every SearchConfig field is a flag and a config-file key.
FLAGS: dict[str, tuple[Any, str]] = {
    "--data": (
        str,
        "fashion-mnist (default), imagefolder:PATH[?classes=N&seed=S] (N classes drawn at "
        "random with seed S, the paper's ImageNet-100), synthetic",
    ),
    "--data-dir": (str, "directory with the Fashion-MNIST IDX files"),
    "--resolution": (int, "input resolution (default: the data's)"),
    "--in-channels": (int, "input channels (default: the data's)"),
    "--classes": (int, "number of classes (default: the data's)"),
    "--epochs": (
        int,
        "search epochs (default 8); with --resume a new total: a finished search goes on, "
        "the cosine schedule rebuilt for the new total from the step reached",
    ),
    "--warmup-epochs": (int, "epochs before alpha is updated (default: epochs x 45/315)"),
    "--steps-per-epoch": (int, "cap on iterations per epoch (default: the whole half)"),
    "--batch-size": (int, "images per batch (default 64)"),
    "--lr": (float, "SGD learning rate of the weights (default: 0.8 x batch / 2048)"),
    "--momentum": (float, "SGD momentum (default 0.9)"),
    "--weight-decay": (float, "SGD weight decay (default 4e-5)"),
    "--alpha-lr": (float, "Adam learning rate of alpha (default 0.016)"),
    "--beta": (float, "weight of the FLOPS hinge cost (default 0.3)"),
    "--lam": (float, "adaptive sampling: K = max(1, floor(lam x H)) (default 0.25)"),
    "--k": (int, "fixed sampling: K (default 14)"),
    "--skip-below": (
        float,
        "skip the training pass of a sample whose weight m_omega is below this; "
        "0 trains every sample (default 1e-3)",
    ),
    "--convert-epoch": (int, "mixed: epoch after which FD becomes JD (default epochs x 80/315)"),
    "--eval-batches": (int, "test batches of 256 scored per epoch (default 20)"),
    "--temperature": (float, "dnas: initial Gumbel-softmax temperature (default 5.0)"),
    "--temperature-decay": (
        float,
        "dnas: temperature factor per epoch (default exp(-0.045) = 0.956, FBNetV2)",
    ),
    "--seed": (int, "seed of the core's generator, torch and the data order (default 0)"),
    "--device": (str, "cpu (default), cuda, cuda:N"),
    "--threads": (int, "torch CPU threads (default: torch's)"),
    "--workers": (
        int,
        "imagefolder: decoding processes for each of the two batch streams (omega, alpha); "
        "0 decodes in the search's process (default: the CPUs less one, at most 16, halved)",
    ),
    "--amp": (
        str,
        "mixed precision of the forward/backward passes: off (default), bf16, fp16 (CUDA); "
        "likelihoods, importance weights and alpha stay float32/float64",
    ),
    "--out": (str, "run directory (default runs/<space>-<timestamp>)"),
    "--warmup-sampling": (
        str,
        "uniform warm-up: the K architectures drawn independently (uniform, default) or "
        "fair: every choice of every variable K/c times (FairNAS strict fairness)",
    ),
    "--distill": (
        str,
        "uniform warm-up: off (default) or largest: the largest architecture's predictions "
        "are the other passes' targets (in-place distillation)",
    ),
    "--checkpoint-every": (
        str,
        "also write a checkpoint within an epoch when this long has passed since the last "
        "one (90s, 5m, 1h; off: at epoch ends only; default 5m): what a killed run loses",
    ),
}


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text + ".")
    p.add_argument("space", nargs="?", help="a .space file or the name of a bundled space")
    p.add_argument("--target-flops", type=float, help="FLOPS target (multiply-accumulates)")
    p.add_argument(
        "--target-latency",
        help="latency target with a unit (3ms, 800us), priced by --latency-table; "
        "with --target-flops too, both hinge costs add",
    )
    p.add_argument(
        "--latency-table", help="a latency table of the space (`fpnas latency SPACE -o TABLE`)"
    )
    p.add_argument(
        "--sampling",
        choices=("adaptive", "fixed"),
        help="adaptive (FP-NAS, default) or fixed K (PARSEC)",
    )
    p.add_argument(
        "--warmup-training",
        choices=("uniform", "weighted"),
        help="warm-up epochs train every sample equally (uniform, default) or weighted by "
        "m_omega (weighted, as Algorithm 1 prints it)",
    )
    p.add_argument(
        "--distribution",
        choices=("mixed", "joint", "factorized"),
        help="mixed FD->JD (FP-NAS, default), joint only, factorized only",
    )
    p.add_argument(
        "--strategy",
        choices=("fpnas", "dnas"),
        help="fpnas: one sampled network per pass (default; --sampling, --distribution); "
        "dnas: FBNetV2's differentiable search, every candidate mixed with Gumbel-softmax "
        "weights (--temperature, --temperature-decay)",
    )
    p.add_argument(
        "--sandwich",
        action="store_true",
        default=None,
        help="uniform warm-up: the largest and the smallest architecture train in every "
        "iteration too (AttentiveNAS's sandwich rule)",
    )
    p.add_argument(
        "--training-policy",
        choices=("importance",),
        help="how the sampled strategies train the weights: importance (default), the K "
        "samples' passes weighted by m_omega (fpnas_dsl.search.training)",
    )
    for flag, (kind, text) in FLAGS.items():
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--config", type=Path, help="TOML or YAML file of these settings")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue a run with its settings; only --epochs, --device, --threads, "
        "--workers, --data-dir and --checkpoint-every may change (other settings that differ "
        "are refused)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="under torchrun: how long a rank waits for the others before the job ends "
        "with a message naming the rank that did not answer (default 300)",
    )
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """Config file first, then every flag given on the command line."""
    return given_settings(args)[0]


def given_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings given (config file, then flags over it) and where each came from."""
    from fpnas_dsl.search.config import read_config_file

    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    origins = dict.fromkeys(values, str(args.config))
    names = ["space", "target_flops", "target_latency", "latency_table", "sampling"]
    names += ["distribution", "warmup_training", "strategy", "training_policy", "sandwich"]
    names += [flag[2:].replace("-", "_") for flag in FLAGS]
    for key in names:
        value = getattr(args, key)
        if value is not None:
            values[key] = value
            origins[key] = "command line"
    return values, origins


def run(args: argparse.Namespace) -> int:
    from fpnas_dsl.search import distributed
    from fpnas_dsl.search.startup import search_everywhere

    if args.timeout is not None and not args.timeout > 0:
        raise FpnasError(f"--timeout {args.timeout:g}: give a number of seconds above 0")
    try:
        result, main = search_everywhere(
            lambda: _settle(args),
            resume=args.resume,
            timeout=args.timeout or distributed.DEFAULT_TIMEOUT,
            progress=not args.no_progress,
            started=lambda line: print(line, flush=True),
        )
    except FpnasError as err:
        if getattr(err, "quiet", False):  # rank 0 says it
            return err.exit_code
        raise
    if main:
        print(json.dumps(result, indent=2))
    return 0


def _settle(args: argparse.Namespace) -> SearchConfig:
    from fpnas_dsl.search.config import make_config
    from fpnas_dsl.search.run import resume_config

    values, origins = given_settings(args)
    if args.resume is not None:
        config = resume_config(args.resume, values, origins)
    else:
        if "space" not in values:
            raise FpnasError("missing SPACE (a .space file or a bundled space name)")
        if "target_flops" not in values and "target_latency" not in values:
            raise FpnasError(
                "missing --target-flops (the FLOPS the architecture may use) or "
                "--target-latency with --latency-table"
            )
        config = make_config(values, origins=origins)
    return config
