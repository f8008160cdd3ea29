"""Set up a search run directory and run it: new, or resumed from its checkpoint.

Everything that can be checked is checked before the run directory is made: the data,
the space (a fixed space has nothing to search), the FLOPS target, the device, the batch
size, whether the supernet fits in memory and its checkpoint on the disk, and the run
directory itself. A run that fails before its first checkpoint removes what it created.

Before it starts, the search says what it changes of the space's declared input to fit
the data (resolution, channels, classes; `retargeted`) and when the data gives fewer
steps per epoch than `--steps-per-epoch` asks for.

On `--resume` the run keeps the settings of its config.json. Only `epochs` (a new total,
to extend a finished search or shorten an unfinished one), `device`, `threads`,
`workers` (it changes no batch), `data_dir` and `checkpoint_every` may change; any other
setting given with a value other than the run's is refused by name (`resume_config`).
With a new number of epochs, the cosine schedule of the weights' learning rate is
rebuilt for the new total number of steps and continues from the restored step
(`fpnas_dsl.search.schedule`): extending a finished search raises the learning rate
from zero to where the longer schedule stands at that step, and the warm-up and FD->JD
epochs stay those of the run.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fpnas_dsl import cost
from fpnas_dsl.data import load_data, save_classes
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.footprint import (
    available_memory,
    disk_free,
    human_bytes,
    supernet_size,
    training_bytes,
)
from fpnas_dsl.ir import Space, count_networks
from fpnas_dsl.parser import load_space
from fpnas_dsl.precision import Precision
from fpnas_dsl.runfiles import (
    CONFIG_FILE,
    SEARCH_SPACE,
    NewRunDir,
    ResumePolicy,
    write_json_atomic,
)
from fpnas_dsl.search.budget import check_latency_target
from fpnas_dsl.search.checkpoint import CHECKPOINT, load_checkpoint
from fpnas_dsl.search.config import (
    SearchConfig,
    load_saved_config,
    make_config,
    origin_name,
    save_config,
)
from fpnas_dsl.search.device import resolve_device
from fpnas_dsl.search.distributed import Group
from fpnas_dsl.search.loop import Search

#: Settings that `--resume` accepts with a new value.
RESUMABLE = ("epochs", "device", "threads", "data_dir", "workers", "checkpoint_every")
RESUME_POLICY = ResumePolicy(RESUMABLE, "start a new run with --out for others")

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_run_dir(config: SearchConfig) -> Path:
    stem = Path(config.space).name.removesuffix(".space")
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_searchable(space: Space) -> None:
    """Refuse a space with nothing to decide: it is one network (every choice has one
    value, or the only open ones belong to skipped blocks, `ir.count_networks`)."""
    if not space.layout.decisions or count_networks(space) == 1:
        raise FpnasError(
            f"space {space.name!r} is fixed: it holds a single network, so there is nothing "
            f"to search. Train it with `fpnas train {space.name} --out DIR`, or price it with "
            f"`fpnas cost {space.name}`"
        )


def check_target(space: Space, target: float) -> dict[str, Any]:
    """Refuse a target no architecture can meet, or one every architecture meets."""
    bounds = cost.cost_range(space, samples=2000, seed=0)
    lo, hi = bounds["flops_min"], bounds["flops_max"]
    if not lo <= target <= hi:
        raise FpnasError(
            f"--target-flops {target:.4g} is outside the space's range: {space.name} at "
            f"{space.resolution}x{space.resolution}x{space.in_channels} spans "
            f"{lo:,} to {hi:,} FLOPS (median {bounds['flops_median']:,.0f})"
        )
    return bounds


def announce(size: dict[str, int], log: Log = _stderr) -> None:
    """Say what the supernet about to be built takes (building a large one takes minutes)."""
    log(
        f"fpnas search: building the supernet: {size['params']:,} weights, "
        f"{human_bytes(size['bytes'])} in float32, at least "
        f"{human_bytes(training_bytes(size))} to train, a checkpoint of about "
        f"{human_bytes(size['checkpoint_bytes'])}"
    )


def check_fits(space: Space, device: Any, run_dir: Path) -> dict[str, int]:
    """The supernet's size; refuse one that cannot fit in memory (the least that training
    takes: weights, gradients, momentum) or whose checkpoint (twice: it is written beside
    the previous one) cannot fit on the run directory's disk."""
    size = supernet_size(space)
    need = training_bytes(size)
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(device)
            where: int | None = int(free)
        except (RuntimeError, AssertionError):  # the driver cannot say: build and see
            where = None
        memory = f"free on {device}"
    else:
        where, memory = available_memory(), "of memory available"
    if where is not None and need > where:
        raise FpnasError(
            f"the supernet of space {space.name!r} does not fit: its {size['params']:,} "
            f"weights ({human_bytes(size['bytes'])} in float32) need at least "
            f"{human_bytes(need)} to train, and there is "
            f"{human_bytes(where)} {memory}; search a smaller space (fewer rows or "
            "choices) or on a machine with more memory"
        )
    free_disk = disk_free(run_dir)
    if free_disk is not None and 2 * size["checkpoint_bytes"] > free_disk:
        raise FpnasError(
            f"a checkpoint of this supernet takes about {human_bytes(size['checkpoint_bytes'])} "
            f"(twice that while the next one is written) and the disk of {run_dir} has "
            f"{human_bytes(free_disk)} free; choose another --out"
        )
    return size


def check_run_dir(run_dir: Path) -> None:
    """Refuse a run directory that holds a search, or that cannot be made or written."""
    if (run_dir / CHECKPOINT).exists():
        raise FpnasError(
            f"{run_dir} already holds a search; continue it with --resume {run_dir} "
            f"or choose another --out"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise FpnasError(f"--out {run_dir}: is a file, expected a directory")
    parent = run_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FpnasError(f"--out {run_dir}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FpnasError(f"--out {run_dir}: cannot write in {parent} (permission denied)")


def load_inputs(config: SearchConfig) -> tuple[Any, Space]:
    """The data and the compiled space of a search."""
    data = load_data(config.data, config.data_dir, seed=config.seed)
    space = load_space(
        config.space,
        resolution=config.resolution or data.resolution,
        in_channels=config.in_channels or data.channels,
        classes=config.classes or data.classes,
    )
    return data, space


def retargeted(
    config: SearchConfig, declared: Space, searched: Space, data_name: str
) -> str | None:
    """What the search changes of the space's declared input to fit the data (the
    settings not given take the data's), and how to keep it; None when nothing."""
    changes, keep = [], []
    if declared.resolution != searched.resolution and config.resolution is None:
        changes.append(f"resolution {declared.resolution} -> {searched.resolution}")
        keep.append(f"--resolution {declared.resolution}")
    if declared.in_channels != searched.in_channels and config.in_channels is None:
        changes.append(f"channels {declared.in_channels} -> {searched.in_channels}")
        if searched.in_channels == 1:  # grey images repeat to more channels
            keep.append(f"--in-channels {declared.in_channels}")
    if declared.classes != searched.classes and config.classes is None:
        changes.append(f"classes {declared.classes} -> {searched.classes}")
    if not changes:
        return None
    how = f"; to keep the declared input, give {' '.join(keep)}" if keep else ""
    return (
        f"fpnas search: space {declared.name!r} declares input {declared.resolution} x "
        f"{declared.resolution} x {declared.in_channels} and {declared.classes} classes; "
        f"the data ({data_name}) re-targets it: {', '.join(changes)}. FLOPS and the target "
        f"refer to the searched input{how}"
    )


def short_epochs(config: SearchConfig, half: int) -> str | None:
    """Say so when the data gives fewer steps per epoch than `--steps-per-epoch`."""
    steps = half // config.batch_size
    if config.steps_per_epoch is None or steps >= config.steps_per_epoch:
        return None
    return (
        f"fpnas search: --steps-per-epoch {config.steps_per_epoch} is not reached: half the "
        f"training set ({half} images) makes {steps} batch{'es' if steps != 1 else ''} of "
        f"{config.batch_size}, so each epoch runs {steps} step{'s' if steps != 1 else ''}"
    )


def prepare_search(
    config: SearchConfig,
    resume: Path | None = None,
    log: Log = _stderr,
    group: Group | None = None,
) -> Search:
    """Check everything, then make (or reopen) the run directory and build the search
    (under torchrun: on rank 0, while the other ranks build theirs with `join_search`)."""
    data, space = load_inputs(config)
    check_searchable(space)
    device = resolve_device(config.device)
    Precision(config.amp, device)  # refuses fp16 without a GPU before anything is made
    half = len(data.train) // 2
    if half < config.batch_size:
        raise FpnasError(
            f"--batch-size {config.batch_size} is larger than half the training set "
            f"({half} images): each half (weights, architecture) needs one batch at least"
        )
    steps = half // config.batch_size
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    state = None
    if resume is not None:
        run_dir = resume
        if (run_dir / CHECKPOINT).exists():
            state = load_checkpoint(run_dir / CHECKPOINT, space)
            check_epochs(config, state, steps)
    else:
        run_dir = Path(config.out) if config.out else default_run_dir(config)
        check_run_dir(run_dir)
    size = check_fits(space, device, run_dir)
    if config.target_flops is not None:
        check_target(space, config.target_flops)
    check_latency_target(config, space)

    # Every check passed: what the search changes of what was asked, then what it builds.
    notes = [
        retargeted(config, load_space(config.space), space, data.name),
        short_epochs(config, half),
    ]
    for said in notes:
        if said is not None:
            log(said)
    announce(size, log)
    created = None if resume is not None else NewRunDir(run_dir)
    try:
        if created is not None:
            created.make()
            save_config(config, run_dir / CONFIG_FILE)
            write_json_atomic(run_dir / SEARCH_SPACE, space.portable_dump())
            save_classes(data, run_dir)
        search = Search(config, space, data, run_dir, group)
        if state is not None:
            search.restore(run_dir / CHECKPOINT, log, state)
            save_config(config, run_dir / CONFIG_FILE)
        elif resume is not None:
            log(
                f"fpnas search: {run_dir} has no checkpoint yet (none is written before "
                "the first epoch ends): starting it from the beginning"
            )
    except BaseException:
        if created is not None:
            created.discard()
        raise
    search.discard = created.discard if created is not None else None
    return search


def join_search(config: SearchConfig, group: Group) -> Search:
    """The search of a rank other than 0: built like rank 0's, from the same settings, and
    then given rank 0's state (`Search.restore`); it writes nothing."""
    data, space = load_inputs(config)
    return Search(config, space, data, Path(config.out or "."), group)


def check_epochs(config: SearchConfig, state: dict[str, Any], steps: int) -> None:
    """Refuse an `--epochs` on resume below what the run has done already."""
    epoch, step = int(state["epoch"]), int(state["step"])
    completed = epoch - 1 + (step > 0)
    if config.epochs < completed:
        raise FpnasError(
            f"--epochs {config.epochs}: the run has done {completed} epochs already "
            f"({epoch - 1} finished{', one begun' if step else ''}); give {completed} or more"
        )


def _same_space(given: str, saved: str) -> bool:
    return given == saved or (
        Path(given).is_file() and Path(given).resolve() == Path(saved).resolve()
    )


def resume_config(
    run_dir: Path, given: dict[str, Any] | None = None, origins: dict[str, str] | None = None
) -> SearchConfig:
    """The saved configuration of a run, with the settings that may change on resume
    taken from `given`; any other setting of `given` that differs is refused by name."""
    if not run_dir.is_dir():
        raise FpnasError(f"{run_dir}: not a search run directory (no such directory)")
    if not (run_dir / CONFIG_FILE).is_file():
        raise FpnasError(f"{run_dir}: not a search run directory (no {CONFIG_FILE})")
    saved = load_saved_config(run_dir / CONFIG_FILE)
    given = dict(given or {})
    out = given.pop("out", None)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise FpnasError(
            f"--resume {run_dir} continues in {run_dir}; leave out --out (or give the same)"
        )
    space = given.pop("space", None)
    if space is not None and not _same_space(str(space), saved.space):
        raise FpnasError(
            f"--resume {run_dir} searches the run's space {saved.space!r}, not {str(space)!r}; "
            "leave out SPACE (or start a new run with --out)"
        )
    merged = make_config({**saved.model_dump(), **given}, origins=origins)
    RESUME_POLICY.check(
        run_dir,
        (
            (key, origin_name(key, origins), getattr(merged, key), getattr(saved, key))
            for key in given
        ),
    )
    return merged
