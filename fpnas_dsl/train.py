"""Train one architecture from scratch with the paper's recipe (Section 5.1, appendix C).

The paper trains its searched networks for 420 epochs on 64 GPUs (batch 4096) with
RMSProp (momentum 0.9), an initial learning rate of 0.2048 decayed by 0.9875 per epoch,
label smoothing, AutoAugment and an exponential moving average (EMA) of the weights.
Here every part is a setting of `TrainConfig` (and a flag of `fpnas train`):

- **optimizer**: `rmsprop` is TensorFlow's RMSProp, which the EfficientNet/MnasNet line of
  recipes (and the paper's numbers 0.2048, 0.9875) come from: the squared-gradient average
  starts at 1 and decays with rho 0.9, epsilon 1e-3 sits *inside* the square root, momentum
  0.9 accumulates lr-scaled steps. PyTorch's `torch.optim.RMSprop` differs on the first
  two (starts at 0, epsilon outside the root), so its steps are near lr x sign(gradient)
  from the first one on, where TensorFlow's are lr x g / sqrt(g^2 + 1e-3), ~30x smaller
  for typical gradients; `sgd` (Nesterov momentum) is the alternative. Weight decay 1e-5
  (L2, as EfficientNet), not on batch-norm parameters and biases.
- **learning rate**: scaled linearly with the batch: 0.2048 * batch / 4096 (0.016 per 256
  images), decayed per epoch as a staircase, as in the paper, or by a cosine schedule; a
  linear warm-up over `warmup_epochs` first. The paper's 0.9875 per epoch takes its
  420-epoch run down to 0.5% of the initial rate; a 20-epoch run with that factor would
  end at 78% and never anneal. So `lr_decay=None` (the default) keeps the paper's *total*
  decay: 0.9875^(420 / epochs) per epoch (0.9875 itself at 420 epochs). Give
  `lr_decay=0.9875` for the literal per-epoch factor.
- **label smoothing** 0.1 (the standard value, Szegedy et al.).
- **AutoAugment** (torchvision, ImageNet policy), drawn per image on uint8 tensors (a
  batched call would apply one draw to the whole batch); 1-channel images work. Off by
  default for data below 64 pixels: on 28x28 Fashion-MNIST it cost accuracy in short runs
  (4 epochs of 20,000 images, a 3.9 MFLOPS network: 82.2% instead of 83.1% test accuracy,
  84.5% instead of 86.1% with EMA); on by default above. The paper reports +0.2% to +0.4%
  from it on ImageNet over 420 epochs.
- plus the usual random crop (zero padding, resolution/8 of the data's images) and
  horizontal flip.
- **EMA** of parameters and batch-norm statistics with TensorFlow's warm-up
  (decay_t = min(decay, (1 + t) / (10 + t))), evaluated on the test split next to the raw
  weights. The paper's 0.9999 averages over ~10,000 steps, 1/13 of its 131,000-step run
  (420 epochs of 312 steps); `ema_decay=None` keeps that proportion for any run length
  (capped at 0.9999).

A training directory holds config.json, arch.json, metrics.jsonl (one line per epoch),
train_state.pt (the resumable state), model.pt and model_ema.pt
(state_dicts of the standalone network, written at each epoch's end) and, at the end,
result.json; every file is written under `fpnas_dsl.runfiles`' durability policy.
train_state.pt is written at each epoch's end, every `checkpoint_every` seconds at a
step boundary (`--checkpoint-every`), and on SIGTERM or Ctrl-C (`fpnas_dsl.stopping`),
after which the run exits with 143 or 130. A resumed run draws the same batches and
augmentations as an uninterrupted one, and continues bit for bit: the order and the
random state of each epoch start are functions of (seed, epoch), and a state written
within an epoch holds the random state, the step and the epoch's running sums.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from fpnas_dsl.archfile import arch_document, load_arch
from fpnas_dsl.data import (
    BatchPreparer,
    DataBundle,
    ImageSet,
    Subset,
    batches,
    eval_batches,
    is_files,
    load_data,
    save_classes,
)
from fpnas_dsl.data import steps_per_epoch as count_steps
from fpnas_dsl.errors import FpnasError, Interrupted, RunError
from fpnas_dsl.ir import Architecture, Space
from fpnas_dsl.pipeline import Augment, Loading, default_workers
from fpnas_dsl.precision import AMP_CHOICES, Precision
from fpnas_dsl.runfiles import (
    ARCH_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    TRAIN_MODEL,
    TRAIN_MODEL_EMA,
    TRAIN_RESULT,
    TRAIN_STATE,
    NewRunDir,
    ResumePolicy,
    append_metrics,
    metrics_size_through,
    read_metrics,
    save_torch_atomic,
    truncate_metrics,
    write_json_atomic,
)
from fpnas_dsl.stopping import (
    DEFAULT_CHECKPOINT_EVERY,
    CheckpointClock,
    StopRequest,
    describe_duration,
)

#: /2 adds the position within an epoch (step, random state, the epoch's running sums)
#: and the metrics file's length; /1 states (epoch ends only) resume as they did.
STATE_FORMAT = "fpnas-train-state/2"
READABLE_FORMATS = ("fpnas-train-state/1", STATE_FORMAT)
PAPER_LR, PAPER_BATCH = 0.2048, 4096
PAPER_EMA_DECAY = 0.9999
PAPER_LR_DECAY, PAPER_EPOCHS = 0.9875, 420
#: The paper's EMA horizon (1 / (1 - 0.9999) = 10,000 steps) is ~1/13 of its run
#: (420 epochs x 312 steps); the automatic decay keeps a horizon of this share of the run.
EMA_HORIZON_SHARE = 0.08
AUTOAUGMENT_MIN_RESOLUTION = 64


@dataclass
class TrainConfig:
    """Every setting of a training run; saved as config.json and read back by --resume."""

    data: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 128
    optimizer: Literal["rmsprop", "sgd"] = "rmsprop"
    #: None: 0.2048 * batch_size / 4096 for rmsprop (the paper), 0.1 * batch / 256 for sgd
    lr: float | None = None
    schedule: Literal["exp", "cosine"] = "exp"
    #: per-epoch factor; None: 0.9875^(420 / epochs), the paper's total decay over the run
    lr_decay: float | None = None
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    rmsprop_rho: float = 0.9
    rmsprop_eps: float = 1e-3
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    #: None: on at resolutions >= 64, off below (see the module docstring)
    autoaugment: bool | None = None
    autoaugment_policy: Literal["imagenet", "cifar10", "svhn"] = "imagenet"
    #: None: resolution // 8; 0 disables the random crop
    crop_padding: int | None = None
    flip: bool = True
    #: None: the paper's horizon share of the run, capped at 0.9999; 0 disables EMA
    ema_decay: float | None = None
    #: train on a fixed random subset of this many images (quick experiments); None: all
    train_subset: int | None = None
    #: channels-last memory format (faster convolutions on the CPU and on GPUs)
    channels_last: bool = True
    eval_every: int = 1
    eval_batch_size: int = 500
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    #: image-folder decoding processes; None: `pipeline.default_workers()`
    workers: int | None = None
    amp: Literal["off", "bf16", "fp16"] = "off"
    progress: bool | None = None
    #: seconds between checkpoints within an epoch (None: at epoch ends only)
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_EVERY

    def resolved(self, steps_per_epoch: int, resolution: int, files: bool = False) -> TrainConfig:
        """The same config with every automatic (None) setting made concrete (`files`:
        the data is an image folder, whose pipeline crops at random already)."""
        out = dataclasses.replace(self)
        if out.lr is None:
            base = PAPER_LR / PAPER_BATCH if out.optimizer == "rmsprop" else 0.1 / 256
            out.lr = base * out.batch_size
        if out.lr_decay is None:
            out.lr_decay = PAPER_LR_DECAY ** (PAPER_EPOCHS / out.epochs)
        if out.autoaugment is None:
            out.autoaugment = resolution >= AUTOAUGMENT_MIN_RESOLUTION
        if out.crop_padding is None:
            out.crop_padding = 0 if files else max(resolution // 8, 0)
        if out.ema_decay is None:
            horizon = EMA_HORIZON_SHARE * out.epochs * steps_per_epoch
            out.ema_decay = min(PAPER_EMA_DECAY, max(0.0, 1.0 - 1.0 / max(horizon, 1.0)))
        return out

    def check(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"--epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"--lr must be > 0 (got {self.lr})")
        if self.lr_decay is not None and not 0 < self.lr_decay <= 1:
            problems.append(f"--lr-decay must be in (0, 1] (got {self.lr_decay})")
        if self.warmup_epochs < 0:
            problems.append(f"--warmup-epochs must be >= 0 (got {self.warmup_epochs})")
        if not 0 <= self.rmsprop_rho < 1:
            problems.append(f"--rmsprop-rho must be in [0, 1) (got {self.rmsprop_rho})")
        if not self.rmsprop_eps > 0:
            problems.append(f"--rmsprop-eps must be > 0 (got {self.rmsprop_eps})")
        if not 0 <= self.momentum < 1:
            problems.append(f"--momentum must be in [0, 1) (got {self.momentum})")
        if self.weight_decay < 0:
            problems.append(f"--weight-decay must be >= 0 (got {self.weight_decay})")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"--label-smoothing must be in [0, 1) (got {self.label_smoothing})")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            problems.append(f"--ema-decay must be in [0, 1) (got {self.ema_decay})")
        if self.crop_padding is not None and self.crop_padding < 0:
            problems.append(f"--crop-padding must be >= 0 (got {self.crop_padding})")
        if self.train_subset is not None and self.train_subset < 1:
            problems.append(f"--train-subset must be >= 1 (got {self.train_subset})")
        if self.eval_every < 1:
            problems.append(f"--eval-every must be >= 1 (got {self.eval_every})")
        if self.workers is not None and self.workers < 0:
            problems.append(f"--workers must be >= 0 (got {self.workers})")
        if self.checkpoint_every is not None and not self.checkpoint_every > 0:
            problems.append(
                f"--checkpoint-every must be a positive duration or off "
                f"(got {self.checkpoint_every})"
            )
        if self.amp not in AMP_CHOICES:
            problems.append(f"--amp must be one of {', '.join(AMP_CHOICES)} (got {self.amp!r})")
        if problems:
            raise FpnasError("; ".join(problems))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


# --------------------------------------------------------------------------------------
# The recipe's parts


class RMSpropTF(torch.optim.Optimizer):
    """TensorFlow's RMSProp with momentum (what the paper's hyper-parameters assume).

    ms <- rho ms + (1 - rho) g^2          (ms starts at 1)
    mom <- momentum mom + lr g / sqrt(ms + eps)
    p <- p - mom
    with g including the L2 term weight_decay * p.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        rho: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {
            "lr": lr,
            "rho": rho,
            "momentum": momentum,
            "eps": eps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads: list[torch.Tensor] = [p.grad for p in params if p.grad is not None]
            if group["weight_decay"]:
                grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
            ms, mom = [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                ms.append(state["square_avg"])
                mom.append(state["momentum_buffer"])
            rho = group["rho"]
            torch._foreach_mul_(ms, rho)
            torch._foreach_addcmul_(ms, grads, grads, value=1 - rho)
            denom = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_mul_(mom, group["momentum"])
            torch._foreach_addcdiv_(mom, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, mom)
        return loss


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    assert cfg.lr is not None
    # No weight decay on batch-norm and bias parameters (1-d tensors), as usual.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(
            groups, lr=cfg.lr, rho=cfg.rmsprop_rho, momentum=cfg.momentum, eps=cfg.rmsprop_eps
        )
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    """The learning rate at `progress` epochs (a float: epoch + step / steps)."""
    assert cfg.lr is not None
    if progress < cfg.warmup_epochs:
        return cfg.lr * progress / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        done = min((progress - cfg.warmup_epochs) / span, 1.0)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * done))
    # The paper's staircase: the rate drops by lr_decay at the end of each epoch.
    assert cfg.lr_decay is not None
    return float(cfg.lr * cfg.lr_decay ** math.floor(progress))


class EMA:
    """Exponential moving average of a module's parameters and floating-point buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self._pairs = self._tensor_pairs(model)

    def _tensor_pairs(
        self, model: nn.Module
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        mine, theirs = self.module.state_dict(), model.state_dict()
        fl = [k for k, v in mine.items() if v.is_floating_point()]
        other = [k for k, v in mine.items() if not v.is_floating_point()]
        return (
            [mine[k] for k in fl],
            [theirs[k] for k in fl],
            [mine[k] for k in other],
            [theirs[k] for k in other],
        )

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine_f, theirs_f, mine_o, theirs_o = self._pairs
        torch._foreach_lerp_(mine_f, theirs_f, 1.0 - decay)
        for a, b in zip(mine_o, theirs_o, strict=True):
            a.copy_(b)


class Augmenter:
    """Training augmentation on uint8 batches [B, C, H, W]: random crop from a zero-padded
    image, horizontal flip, AutoAugment per image. For an image folder, flip and
    AutoAugment run in the pipeline's workers (`files`), with the random-resized crop."""

    def __init__(self, cfg: TrainConfig, files: bool = False) -> None:
        self.padding = int(cfg.crop_padding or 0)
        self.flip = cfg.flip and not files
        self.autoaugment: Callable[[torch.Tensor], torch.Tensor] | None = None
        if cfg.autoaugment and not files:
            from torchvision.transforms import v2

            policy = v2.AutoAugmentPolicy(cfg.autoaugment_policy)
            self.autoaugment = v2.AutoAugment(policy)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        if self.autoaugment is not None:
            # One draw per image: a batched call would augment the whole batch alike.
            images = torch.stack([self.autoaugment(img) for img in images])
        if self.padding:
            p = self.padding
            padded = F.pad(images, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b, 1, 1, 1))
            dx = torch.randint(0, 2 * p + 1, (b, 1, 1, 1))
            rows = (dy + torch.arange(h).view(1, 1, h, 1)).expand(b, c, h, w)
            cols = (dx + torch.arange(w).view(1, 1, 1, w)).expand(b, c, h, w)
            flat = padded.flatten(2)
            images = flat.gather(2, (rows * (w + 2 * p) + cols).flatten(2)).view(b, c, h, w)
        if self.flip:
            mask = torch.rand(b) < 0.5
            images = torch.where(mask.view(b, 1, 1, 1), images.flip(-1), images)
        return images


# --------------------------------------------------------------------------------------
# What to train


def resolve_architecture(
    arch_arg: str,
    data: DataBundle | None = None,
    resolution: int | None = None,
    in_channels: int | None = None,
    classes: int | None = None,
    space_arg: str | None = None,
) -> tuple[Space, Architecture]:
    """An arch.json (read against `space_arg` where given), or a fixed space (a bundled
    name or .space path with exactly one architecture) instantiated for the data
    (resolution, channels, classes) unless the overrides say otherwise."""
    path = Path(arch_arg)
    if path.suffix == ".json" or path.is_dir() or space_arg is not None:
        if path.is_dir():
            path = path / ARCH_FILE
        space, arch, _ = load_arch(path, space_arg)
        if resolution or in_channels or classes:
            space = _reshaped(space, resolution, in_channels, classes)
            arch = arch.model_copy(
                update={
                    "resolution": space.resolution,
                    "in_channels": space.in_channels,
                    "classes": space.classes,
                }
            )
        return space, arch
    from fpnas_dsl.archfile import load_fixed

    if data is not None:
        resolution = resolution or data.resolution
        in_channels = in_channels or data.channels
        classes = classes or data.classes
    return load_fixed(arch_arg, resolution, in_channels, classes)


def _reshaped(
    space: Space, resolution: int | None, in_channels: int | None, classes: int | None
) -> Space:
    """The space of an arch.json for another input, validated as `fpnas compile` would."""
    from fpnas_dsl.errors import SpaceError
    from fpnas_dsl.validate import MAX_NUMBER, validate_space

    for flag, value in (
        ("--resolution", resolution),
        ("--in-channels", in_channels),
        ("--classes", classes),
    ):
        if value is not None and not 1 <= value <= MAX_NUMBER:
            raise FpnasError(f"{flag} must be a whole number from 1 to {MAX_NUMBER}, got {value}")
    reshaped = space.with_input(resolution, in_channels, classes)
    try:
        return validate_space(reshaped)
    except SpaceError as err:
        raise FpnasError(
            f"the architecture cannot take that input: {err.message}"
            + (f" ({err.hint})" if err.hint else "")
        ) from None


def check_fits(arch: Architecture, data: DataBundle) -> None:
    if arch.classes != data.classes:
        raise FpnasError(
            f"the architecture has {arch.classes} classes and the data set {data.name!r} has "
            f"{data.classes}; pass --classes {data.classes} (for a space) or search again"
        )
    if arch.in_channels != data.channels and data.channels != 1:
        raise FpnasError(
            f"the architecture takes {arch.in_channels} input channels and the data set "
            f"{data.name!r} has {data.channels}"
        )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from fpnas_dsl.search.loop import resolve_device

    return resolve_device(name)


# --------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    out: Path
    epochs: int
    test_acc: float
    test_acc_ema: float | None
    best_weights: str
    wall_s: float
    flops: int
    params: int

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["out"] = str(self.out)
        return doc


Log = Callable[[str], None]


def evaluate(
    model: nn.Module,
    test: ImageSet,
    prep: BatchPreparer,
    batch_size: int,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on a split, in eval mode."""
    was_training = model.training
    model.eval()
    correct, total, loss = 0, 0, 0.0
    with torch.no_grad():
        for images, labels in eval_batches(test, batch_size):
            labels = labels.to(prep.device)
            logits = model(prep(images).contiguous(memory_format=memory_format))
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
            total += int(labels.numel())
    model.train(was_training)
    return correct / max(total, 1), loss / max(total, 1)


def train(
    arch_arg: str | None,
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    epochs: int | None = None,
    resolution: int | None = None,
    in_channels: int | None = None,
    classes: int | None = None,
    log: Log = print,
    given: dict[str, Any] | None = None,
    space_arg: str | None = None,
) -> TrainResult:
    """Train from scratch into `out` (or continue the run in `out` when `resume`).

    `given`: the settings the user gave explicitly (flag -> value); on resume those that
    differ from the run's own are refused by name (`RESUME_POLICY`). SIGTERM and Ctrl-C
    stop the run at the next step with a checkpoint (`errors.Interrupted`, exit 143 or
    130). A run that fails before its first checkpoint removes what it created."""
    out = Path(out)
    run_dir = None if resume else NewRunDir(out)
    saved = (out / TRAIN_STATE).exists
    try:
        with StopRequest() as stop, _discarded_unless(run_dir, saved):
            return _train(
                arch_arg,
                out,
                cfg,
                resume,
                epochs,
                resolution,
                in_channels,
                classes,
                log,
                given,
                space_arg,
                run_dir,
                stop,
            )
    except KeyboardInterrupt:  # a second Ctrl-C, which stops at once
        if saved():
            raise Interrupted(
                f"interrupted; the last checkpoint is saved in {out}: resume with "
                f"fpnas train --resume {out}"
            ) from None
        raise Interrupted("interrupted before the first checkpoint; nothing was kept") from None


def _discarded_unless(
    run_dir: NewRunDir | None, kept: Callable[[], bool]
) -> AbstractContextManager[Any]:
    return run_dir.discarded_unless(kept) if run_dir is not None else contextlib.nullcontext()


@dataclass
class EpochProgress:
    """How far an epoch has got: the steps done and the running sums of its row."""

    step: int = 0
    seen: int = 0
    correct: int = 0
    loss_sum: float = 0.0
    #: seconds of training in this epoch so far (before a resumption too)
    train_s: float = 0.0


def _train(
    arch_arg: str | None,
    out: Path,
    cfg: TrainConfig,
    resume: bool,
    epochs: int | None,
    resolution: int | None,
    in_channels: int | None,
    classes: int | None,
    log: Log,
    given: dict[str, Any] | None,
    space_arg: str | None,
    run_dir: NewRunDir | None,
    stop: StopRequest,
) -> TrainResult:
    from fpnas_dsl.export import architecture_cost, build_standalone

    state: dict[str, Any] | None = None
    if resume:
        cfg, space, arch, state = _open_resume(out, epochs, cfg, given or {})
    else:
        if epochs is not None:
            cfg.epochs = epochs
        cfg.check()
        if arch_arg is None:
            raise FpnasError("give an architecture (ARCH.json or a fixed space) or --resume DIR")
        if (out / TRAIN_STATE).exists():
            raise FpnasError(
                f"{out}: holds a training run already; continue it with --resume "
                f"{out}, or choose another --out"
            )
        if out.exists() and not out.is_dir():
            raise FpnasError(f"--out {out}: is a file, expected a directory")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    precision = Precision(cfg.amp, device)
    data = load_data(cfg.data, cfg.data_dir, cfg.seed)
    workers = cfg.workers if cfg.workers is not None else default_workers()
    data.set_loading(Loading(workers=workers, pin_memory=device.type == "cuda"))
    files = is_files(data.train)
    if cfg.train_subset is not None and cfg.train_subset < len(data.train):
        gen = torch.Generator().manual_seed(cfg.seed)
        keep = torch.randperm(len(data.train), generator=gen)[: cfg.train_subset]
        data.train = Subset(data.train, keep)
    if not resume:
        assert arch_arg is not None
        space, arch = resolve_architecture(
            arch_arg, data, resolution, in_channels, classes, space_arg
        )
    check_fits(arch, data)
    steps = count_steps(data.train, cfg.batch_size)
    if steps < 1:
        raise FpnasError(
            f"--batch-size {cfg.batch_size} exceeds the {len(data.train)} training images"
        )
    # Augmentation runs on the data's images, before they are resized for the network.
    automatic_ema = cfg.ema_decay is None
    cfg = cfg.resolved(steps, data.resolution, files)
    flops, params = architecture_cost(space, arch)

    torch.manual_seed(cfg.seed)
    model = build_standalone(space, arch).to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    start_epoch, wall = 0, 0.0
    resumed = EpochProgress()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        precision.load_state_dict(state.get("grad_scaler"))
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
            ema.updates = int(state["ema_updates"])
        start_epoch, wall = int(state["epoch"]), float(state["wall"])
        if "progress" in state:  # written within an epoch
            resumed = EpochProgress(**state["progress"])
        metrics_size = state.get("metrics_bytes")
        if metrics_size is None:  # a /1 state: the lines of its finished epochs
            metrics_size = metrics_size_through(out / METRICS_FILE, start_epoch)
        truncate_metrics(out / METRICS_FILE, int(metrics_size))
    else:
        assert run_dir is not None
        run_dir.make()
        write_json_atomic(out / CONFIG_FILE, asdict(cfg))
        write_json_atomic(out / ARCH_FILE, arch_document(space, arch, flops=flops, params=params))
        save_classes(data, out)

    prep = BatchPreparer(data, arch.resolution, arch.in_channels, device)
    augment = Augmenter(cfg, files)
    # An image folder's training transform, drawn per image in the decoding workers.
    pipeline_augment = Augment(
        flip=cfg.flip, autoaugment=cfg.autoaugment_policy if cfg.autoaugment else None
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    where = ""
    if start_epoch or resumed.step:
        where = f", resuming {_position(start_epoch, resumed.step, steps)}"
    log(
        f"training {arch.space} ({flops / 1e6:.2f} MFLOPS, {params / 1e6:.3f} M params, "
        f"{arch.in_channels}x{arch.resolution}x{arch.resolution}) on {data.name}: "
        f"{cfg.epochs} epochs x {steps} steps of {cfg.batch_size}, {cfg.optimizer} lr "
        f"{cfg.lr:.4g}, label smoothing {cfg.label_smoothing}, autoaugment "
        f"{'on' if cfg.autoaugment else 'off'}, EMA {cfg.ema_decay:.5g}, device {device}, "
        "checkpoints at epoch ends"
        + (f" and every {describe_duration(cfg.checkpoint_every)}" if cfg.checkpoint_every else "")
        + where
    )
    note = short_run_note(cfg, steps, automatic_ema)
    if note and state is None:
        log(note)
    test_acc, test_acc_ema = float("nan"), None
    if start_epoch:
        last = read_metrics(out / METRICS_FILE)
        if last:
            test_acc = float(last[-1].get("test_acc", float("nan")))
            test_acc_ema = last[-1].get("test_acc_ema")

    from tqdm import tqdm

    clock = CheckpointClock(cfg.checkpoint_every)

    def save(epoch: int, progress: EpochProgress) -> None:
        """The resumable state: after `epoch` epochs and `progress.step` steps more."""
        _save_state(out, epoch, progress, model, optimizer, ema, wall, cfg, precision, device)
        clock.reset()

    def stopped(epoch: int, step: int) -> Interrupted:
        return Interrupted(
            f"stopped by {stop.signal_name} {_position(epoch, step, steps)}; the state is "
            f"saved in {out}: resume with fpnas train --resume {out}",
            exit_code=stop.exit_code,
        )

    model.train()
    lr = learning_rate(cfg, start_epoch + resumed.step / steps)
    for epoch in range(start_epoch, cfg.epochs):
        progress = resumed if epoch == start_epoch else EpochProgress()
        if progress.step:
            _restore_random(state, device)
        else:
            # The random state of an epoch depends on (seed, epoch) alone: resumable exactly.
            torch.manual_seed(cfg.seed * 1_000_003 + epoch + 1)
        began = time.perf_counter() - progress.train_s
        bar = tqdm(
            batches(
                data.train,
                cfg.batch_size,
                cfg.seed,
                epoch,
                start=progress.step,
                augment=pipeline_augment,
            ),
            total=steps,
            initial=progress.step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=_no_bar(cfg),
            leave=False,
            unit="batch",
            dynamic_ncols=True,
        )
        for images, labels in bar:
            step = progress.step
            lr = learning_rate(cfg, epoch + step / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = prep(augment(images)).contiguous(memory_format=memory_format)
            labels = labels.to(device)
            with precision.autocast():
                logits = model(x)
            loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            precision.backward(loss)
            precision.step(optimizer)
            if ema is not None:
                ema.update()
            n = int(labels.numel())
            progress.step += 1
            progress.seen += n
            progress.loss_sum += float(loss.detach()) * n
            progress.correct += int((logits.argmax(1) == labels).sum())
            if step % 20 == 0:
                bar.set_postfix(
                    loss=f"{progress.loss_sum / progress.seen:.3f}",
                    acc=f"{progress.correct / progress.seen:.3f}",
                    lr=f"{lr:.2e}",
                )
            if progress.step < steps and (stop.requested or clock.due()):
                progress.train_s = time.perf_counter() - began
                save(epoch, progress)
                if stop.requested:
                    bar.close()
                    raise stopped(epoch, progress.step)
        bar.close()
        seen, loss_sum = progress.seen, progress.loss_sum
        if not math.isfinite(loss_sum):
            raise RunError(
                f"training diverged in epoch {epoch + 1} (loss is not finite); "
                "try a lower --lr or more --warmup-epochs"
            )
        train_s = time.perf_counter() - began
        wall += train_s
        row: dict[str, Any] = {
            "type": "epoch",
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / seen,
            "train_acc": progress.correct / seen,
            "images": seen,
            "epoch_s": round(train_s, 3),
            "images_per_s": round(seen / train_s, 1),
            "wall": round(wall, 3),
        }
        last_epoch = epoch + 1 == cfg.epochs
        if last_epoch or (epoch + 1) % cfg.eval_every == 0:
            test_acc, test_loss = evaluate(
                model, data.test, prep, cfg.eval_batch_size, memory_format
            )
            row.update(test_acc=test_acc, test_loss=test_loss)
            if ema is not None:
                test_acc_ema, test_loss_ema = evaluate(
                    ema.module, data.test, prep, cfg.eval_batch_size, memory_format
                )
                row.update(test_acc_ema=test_acc_ema, test_loss_ema=test_loss_ema)
        # The row first: a state names the metrics' length, so a run killed between the
        # two redoes the epoch and its row (`truncate_metrics`).
        append_metrics(out / METRICS_FILE, row)
        save(epoch + 1, EpochProgress())
        _save_weights(out, model, ema)
        log(_epoch_line(row, cfg.epochs))
        if stop.requested and not last_epoch:
            raise stopped(epoch + 1, 0)

    best = TRAIN_MODEL
    if test_acc_ema is not None and float(test_acc_ema) >= test_acc:
        best = TRAIN_MODEL_EMA
    result = TrainResult(
        out,
        cfg.epochs,
        test_acc,
        test_acc_ema if ema else None,
        best,
        round(wall, 3),
        flops,
        params,
    )
    doc = result.to_json()
    doc.update(space=arch.space, resolution=arch.resolution, data=cfg.data, config=asdict(cfg))
    write_json_atomic(out / TRAIN_RESULT, doc)
    return result


def short_run_note(cfg: TrainConfig, steps: int, automatic_ema: bool) -> str | None:
    """A note for a run no longer than its learning-rate warm-up: every step is inside
    it, so the rate never reaches its peak and the accuracy can stay at chance."""
    assert cfg.lr is not None
    if not cfg.warmup_epochs or cfg.epochs > cfg.warmup_epochs:
        return None
    total = cfg.epochs * steps
    text = (
        f"note: the run ({cfg.epochs} epoch{'s' * (cfg.epochs > 1)}, {total} steps) is not "
        f"longer than its learning-rate warm-up ({cfg.warmup_epochs:g} epochs): every step "
        f"is inside it, so the rate rises to {learning_rate(cfg, cfg.epochs - 1 / steps):.3g} "
        f"at most, short of {cfg.lr:.3g}; give --warmup-epochs below {cfg.epochs} or more "
        "--epochs"
    )
    if automatic_ema and cfg.ema_decay:
        text += (
            f". The EMA decay became {cfg.ema_decay:.3g} (the paper's {PAPER_EMA_DECAY} scaled "
            f"to {total} steps); --ema-decay sets it"
        )
    return text


def _position(epoch: int, step: int, steps: int) -> str:
    """Where a run stands, as a user reads it (epochs count from 1)."""
    if step == 0:
        return f"after epoch {epoch}" if epoch else "before the first step"
    return f"at epoch {epoch + 1}, step {step} of {steps}"


def _no_bar(cfg: TrainConfig) -> bool | None:
    # tqdm: None = only on a terminal
    return None if cfg.progress is None else not cfg.progress


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    text = (
        f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, train acc "
        f"{row['train_acc']:.4f}"
    )
    if "test_acc" in row:
        text += f", test acc {row['test_acc']:.4f}"
    if "test_acc_ema" in row:
        text += f" (EMA {row['test_acc_ema']:.4f})"
    return text + f", {row['images_per_s']:.0f} img/s, {row['wall']:.0f} s"


def _save_state(
    out: Path,
    epoch: int,
    progress: EpochProgress,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    wall: float,
    cfg: TrainConfig,
    precision: Precision,
    device: torch.device,
) -> None:
    """train_state.pt: after `epoch` epochs and `progress.step` steps of the next."""
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "wall": wall,
        "config": asdict(cfg),
        "model": _cpu(model),
        "optimizer": optimizer.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "ema_updates": ema.updates if ema is not None else 0,
        "grad_scaler": precision.state_dict(),
        "metrics_bytes": _size(out / METRICS_FILE),
        "saved_at": time.time(),
    }
    if progress.step:
        state["progress"] = asdict(progress)
        state["torch_rng"] = torch.get_rng_state()
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
    save_torch_atomic(state, out / TRAIN_STATE)


def _restore_random(state: dict[str, Any] | None, device: torch.device) -> None:
    assert state is not None
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def _save_weights(out: Path, model: nn.Module, ema: EMA | None) -> None:
    """model.pt and model_ema.pt: the standalone network's weights at an epoch's end."""
    save_torch_atomic(_cpu(model), out / TRAIN_MODEL)
    if ema is not None:
        save_torch_atomic(_cpu(ema.module), out / TRAIN_MODEL_EMA)


def _cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


#: Settings that `fpnas train --resume` takes with a new value.
RESUMABLE = (
    "epochs",
    "device",
    "threads",
    "workers",
    "data_dir",
    "progress",
    "checkpoint_every",
)
RESUME_POLICY = ResumePolicy(RESUMABLE, "train again into another --out for others")


def _open_resume(
    out: Path, epochs: int | None, overrides: TrainConfig, given: dict[str, Any]
) -> tuple[TrainConfig, Space, Architecture, dict[str, Any]]:
    path = out / TRAIN_STATE
    if not out.is_dir():
        raise FpnasError(f"{out}: nothing to resume (no such directory)")
    if not path.is_file():
        raise FpnasError(f"{out}: nothing to resume (no {TRAIN_STATE})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged file: torch raises many types
        raise FpnasError(
            f"{path}: corrupt or unreadable training state ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise FpnasError(f"{path}: not an fpnas training state (expected {STATE_FORMAT})")
    cfg = TrainConfig.from_dict(state["config"])
    RESUME_POLICY.check(
        out,
        (
            (key, "--" + key.replace("_", "-"), value, getattr(cfg, key))
            for key, value in given.items()
            if hasattr(cfg, key)
        ),
    )
    if epochs is not None:
        done = int(state.get("epoch", 0))
        begun = done + ("progress" in state)
        if epochs < begun:
            raise FpnasError(
                f"--epochs {epochs}: the run has trained {done} epochs already"
                + (" and begun the next" if begun > done else "")
            )
        cfg.epochs = epochs  # continue to a new total
    cfg.progress = overrides.progress
    cfg.threads = overrides.threads or cfg.threads
    for key in ("device", "data_dir", "workers", "checkpoint_every"):
        if key in given:
            setattr(cfg, key, given[key])
    cfg.check()
    space, arch, _ = load_arch(out / ARCH_FILE)
    return cfg, space, arch, state
