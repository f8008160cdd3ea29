"""Set up a search run directory and run it: new, or resumed from its checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fpnas_dsl import cost
from fpnas_dsl.data import load_data
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Space
from fpnas_dsl.parser import load_space
from fpnas_dsl.search.checkpoint import CHECKPOINT
from fpnas_dsl.search.config import SearchConfig, load_saved_config, save_config
from fpnas_dsl.search.loop import Search

CONFIG_FILE = "config.json"
SPACE_FILE = "space.json"


def default_run_dir(config: SearchConfig) -> Path:
    stem = Path(config.space).name.removesuffix(".space")
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


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


def prepare_search(config: SearchConfig, resume: Path | None = None) -> Search:
    data = load_data(config.data, config.data_dir, seed=config.seed)
    space = load_space(
        config.space,
        resolution=config.resolution or data.resolution,
        in_channels=config.in_channels or data.channels,
        classes=config.classes or data.classes,
    )
    check_target(space, config.target_flops)
    if resume is not None:
        run_dir = resume
    else:
        run_dir = Path(config.out) if config.out else default_run_dir(config)
    if resume is None:
        if (run_dir / CHECKPOINT).exists():
            raise FpnasError(
                f"{run_dir} already holds a search; continue it with --resume {run_dir} "
                f"or choose another --out"
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FpnasError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
        save_config(config, run_dir / CONFIG_FILE)
        (run_dir / SPACE_FILE).write_text(space.model_dump_json(indent=2) + "\n")
    search = Search(config, space, data, run_dir)
    if resume is not None:
        search.restore(run_dir / CHECKPOINT)
    return search


def resume_config(run_dir: Path) -> SearchConfig:
    if not (run_dir / CONFIG_FILE).is_file():
        raise FpnasError(f"{run_dir}: not a search run directory (no {CONFIG_FILE})")
    return load_saved_config(run_dir / CONFIG_FILE)
