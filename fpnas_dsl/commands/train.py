"""`fpnas train ARCH --data fashion-mnist --epochs N --out DIR` (and `--resume DIR`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fpnas_dsl.commands import add_space_option
from fpnas_dsl.stopping import DEFAULT_CHECKPOINT_EVERY, describe_duration, parse_duration


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def _interval(text: str) -> float | None:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any, name: str, help_text: str) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Train an architecture from scratch with the paper's recipe: RMSProp "
            "(TensorFlow's, momentum 0.9), lr 0.2048 x batch/4096 decayed per epoch (the "
            "paper's 0.9875^420 in total) after a warm-up, label smoothing 0.1, AutoAugment "
            "(default on for images of 64 pixels and more), EMA of the weights. ARCH is "
            "an arch.json (from `fpnas search`), a search run directory, or a fixed space "
            "(a bundled name such as mobilenet_v2, or a .space path, whose choices are all "
            "fixed), instantiated for the data unless --resolution/--in-channels/--classes "
            "say otherwise. Writes DIR/metrics.jsonl, checkpoints each epoch (and within "
            "one: --checkpoint-every), and "
            "DIR/result.json with the test accuracy of the raw and the EMA weights."
        ),
    )
    p.add_argument("arch", nargs="?", metavar="ARCH", help="arch.json, run dir, or fixed space")
    add_space_option(p)
    p.add_argument(
        "--out", "-o", metavar="DIR", help="training directory (required unless --resume)"
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the training run in DIR with its settings (config.json); "
        "only --epochs (a new total), --device, --threads, --workers, --data-dir, "
        "--progress and --checkpoint-every may change (other settings that differ from the "
        "run's are refused)",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default="fashion-mnist",
        help="fashion-mnist (default), imagefolder:PATH[?classes=N&seed=S], synthetic[:k=v,...]",
    )
    g.add_argument("--data-dir", metavar="DIR", help="directory of the Fashion-MNIST IDX files")
    g.add_argument("--resolution", type=_positive_int, help="input resolution override")
    g.add_argument("--in-channels", type=_positive_int, help="input channels override")
    g.add_argument("--classes", type=_positive_int, help="number of classes override")
    g.add_argument(
        "--train-subset",
        type=_positive_int,
        metavar="N",
        help="train on a fixed random subset of N images (quick experiments)",
    )
    g = p.add_argument_group("schedule")
    g.add_argument(
        "--epochs",
        type=_positive_int,
        help="epochs (default 30; with --resume: a new total to continue to)",
    )
    g.add_argument("--batch-size", "-b", type=_positive_int, default=128)
    g.add_argument("--optimizer", choices=("rmsprop", "sgd"), default="rmsprop")
    g.add_argument(
        "--lr",
        type=float,
        help="initial learning rate (default 0.2048 x batch/4096 "
        "for rmsprop, 0.1 x batch/256 for sgd)",
    )
    g.add_argument(
        "--schedule",
        choices=("exp", "cosine"),
        default="exp",
        help="exp: x lr-decay per epoch, as the paper (default); cosine",
    )
    g.add_argument(
        "--lr-decay",
        type=float,
        metavar="F",
        help="per-epoch decay factor (default: 0.9875^(420/epochs), the paper's "
        "total decay over its 420 epochs spread over this run; 0.9875: the paper's "
        "factor as is)",
    )
    g.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up (1 epoch)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--rmsprop-eps", type=float, default=1e-3, help="inside the root (1e-3)")
    g.add_argument("--rmsprop-rho", type=float, default=0.9, help="squared-gradient decay")
    g.add_argument("--weight-decay", type=float, default=1e-5)
    g = p.add_argument_group("regularisation")
    g.add_argument("--label-smoothing", type=float, default=0.1)
    aa = g.add_mutually_exclusive_group()
    aa.add_argument(
        "--autoaugment",
        dest="autoaugment",
        action="store_true",
        default=None,
        help="AutoAugment on (default: on at resolution >= 64, off below)",
    )
    aa.add_argument("--no-autoaugment", dest="autoaugment", action="store_false")
    g.add_argument(
        "--autoaugment-policy", choices=("imagenet", "cifar10", "svhn"), default="imagenet"
    )
    g.add_argument(
        "--crop-padding",
        type=int,
        metavar="PX",
        help="random crop from a zero-padded image (default resolution/8; 0: off)",
    )
    g.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flip")
    g.add_argument(
        "--ema-decay",
        type=float,
        metavar="D",
        help="EMA decay per step (default: the paper's 0.9999 scaled to the run "
        "length; 0 disables EMA)",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--eval-every",
        type=_positive_int,
        default=1,
        metavar="N",
        help="evaluate on the test split every N epochs (and at the end)",
    )
    g.add_argument("--eval-batch-size", type=_positive_int, default=500)
    g.add_argument(
        "--checkpoint-every",
        type=_interval,
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="DURATION",
        help="also checkpoint within an epoch when this long has passed since the last "
        f"checkpoint (default {describe_duration(DEFAULT_CHECKPOINT_EVERY)}; 90s, 10m, 1h, "
        "off); SIGTERM and Ctrl-C checkpoint at the next step and exit with 143 or 130",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="imagefolder: decoding processes (0: in this process; default: the CPUs less "
        "one, at most 16); the batches do not depend on it",
    )
    g.add_argument(
        "--amp",
        choices=("off", "bf16", "fp16"),
        default="off",
        help="mixed precision of the forward/backward passes (default off; fp16 needs CUDA)",
    )
    g.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="keep the contiguous memory format (channels-last is faster on CPUs)",
    )
    bar = g.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="progress bars even when not on a terminal",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)
    for action in p._actions:  # the first action of a dest sets its default, as in argparse
        if action.dest != "help":
            DEFAULTS.setdefault(action.dest, action.default)


#: dest -> default of every option, to tell the settings a user gave from the defaults.
DEFAULTS: dict[str, Any] = {}

#: Options that are not TrainConfig settings.
NOT_SETTINGS = {"arch", "out", "resume", "epochs", "resolution", "in_channels", "classes"}


def run(args: argparse.Namespace) -> int:
    from fpnas_dsl.errors import FpnasError
    from fpnas_dsl.train import TrainConfig, train

    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise FpnasError("--resume DIR continues in DIR; leave out --out (or give the same)")
        if args.arch or args.space:
            raise FpnasError("--resume DIR takes the architecture from DIR; leave out ARCH")
        given_shape = [
            "--" + key.replace("_", "-")
            for key in ("resolution", "in_channels", "classes")
            if getattr(args, key) is not None
        ]
        if given_shape:
            raise FpnasError(
                f"--resume DIR trains the run's architecture as it is; leave out "
                f"{', '.join(given_shape)}"
            )
        out = Path(args.resume)
    else:
        if not args.arch:
            raise FpnasError("give an architecture (ARCH.json, a run directory or a fixed space)")
        if not args.out:
            raise FpnasError("give --out DIR for the training directory")
        out = Path(args.out)
    cfg = TrainConfig(
        data=args.data,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        lr_decay=args.lr_decay,
        warmup_epochs=args.warmup_epochs,
        momentum=args.momentum,
        rmsprop_eps=args.rmsprop_eps,
        rmsprop_rho=args.rmsprop_rho,
        weight_decay=args.weight_decay,
        train_subset=args.train_subset,
        channels_last=args.channels_last,
        label_smoothing=args.label_smoothing,
        autoaugment=args.autoaugment,
        autoaugment_policy=args.autoaugment_policy,
        crop_padding=args.crop_padding,
        flip=args.flip,
        ema_decay=args.ema_decay,
        eval_every=args.eval_every,
        eval_batch_size=args.eval_batch_size,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        workers=args.workers,
        amp=args.amp,
        progress=args.progress,
        checkpoint_every=args.checkpoint_every,
    )
    given = {
        key: value
        for key, value in vars(args).items()
        if key in DEFAULTS and key not in NOT_SETTINGS and value != DEFAULTS[key]
    }
    result = train(
        args.arch,
        out,
        cfg,
        given=given,
        space_arg=args.space,
        resume=bool(args.resume),
        epochs=args.epochs,
        resolution=args.resolution,
        in_channels=args.in_channels,
        classes=args.classes,
    )
    ema = f", EMA weights {result.test_acc_ema:.2%}" if result.test_acc_ema is not None else ""
    print(
        f"final test accuracy after {result.epochs} epochs: raw weights {result.test_acc:.2%}"
        f"{ema} ({_duration(result.wall_s)} of training)"
    )
    print(f"wrote {out}/result.json; best weights {out}/{result.best_weights}")
    return 0


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
