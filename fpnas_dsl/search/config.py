"""The search configuration: defaults from the paper, overridden by a TOML/YAML file,
overridden by command-line flags. The resolved configuration is written to the run
directory and is what `--resume` reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import tomllib
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fpnas_dsl.errors import FpnasError

#: Paper (Section 5.1): 315 epochs, 45 of them warm-up; SGD lr 0.8 for batch 2048.
PAPER_EPOCHS = 315
PAPER_WARMUP = 45
PAPER_LR = 0.8
PAPER_BATCH = 2048


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    space: str
    target_flops: float = Field(gt=0, description="FLOPS (multiply-accumulates) target")
    data: str = "fashion-mnist"
    data_dir: str | None = None
    resolution: int | None = Field(None, ge=1, description="default: the data's")
    in_channels: int | None = Field(None, ge=1, description="default: the data's")
    classes: int | None = Field(None, ge=1, description="default: the data's")
    epochs: int = Field(8, ge=1)
    warmup_epochs: int | None = Field(None, ge=0, description="default: epochs x 45/315")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="cap on iterations per epoch (default: the whole half)"
    )
    batch_size: int = Field(64, ge=1)
    lr: float | None = Field(None, gt=0, description="default: 0.8 x batch / 2048")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(4e-5, ge=0)
    alpha_lr: float = Field(0.016, gt=0)
    beta: float = Field(0.3, ge=0)
    sampling: Literal["adaptive", "fixed"] = "adaptive"
    lam: float = Field(0.25, gt=0)
    k: int = Field(14, ge=1)
    warmup_training: Literal["uniform", "weighted"] = Field(
        "uniform",
        description="warm-up epochs train every sample with weight 1/K (uniform) or with "
        "m_omega as after the warm-up (weighted, Algorithm 1 as printed)",
    )
    skip_below: float = Field(
        1e-3,
        ge=0,
        lt=1,
        description="skip the training pass of a sample whose m_omega is below this (0: none)",
    )
    distribution: Literal["mixed", "joint", "factorized"] = "mixed"
    convert_epoch: int | None = Field(
        None, ge=1, description="mixed: epoch after which FD becomes JD (default: epochs x 80/315)"
    )
    eval_batches: int = Field(20, ge=1, description="test batches scored per epoch")
    seed: int = 0
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)
    out: str | None = None

    @model_validator(mode="after")
    def _fill_derived(self) -> SearchConfig:
        if self.warmup_epochs is None:
            object.__setattr__(
                self, "warmup_epochs", round(self.epochs * PAPER_WARMUP / PAPER_EPOCHS)
            )
        if self.lr is None:
            object.__setattr__(self, "lr", PAPER_LR * self.batch_size / PAPER_BATCH)
        if self.convert_epoch is None:
            object.__setattr__(
                self, "convert_epoch", max(1, round(self.epochs * 80 / PAPER_EPOCHS))
            )
        assert self.warmup_epochs is not None
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})"
            )
        return self

    @property
    def warmup(self) -> int:
        assert self.warmup_epochs is not None
        return self.warmup_epochs

    @property
    def weight_lr(self) -> float:
        assert self.lr is not None
        return self.lr


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML or YAML file of SearchConfig fields (dashes or underscores)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise FpnasError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise FpnasError(
            f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FpnasError(f"{path}: expected a table of settings at the top level")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def make_config(values: dict[str, Any], source: str = "command line") -> SearchConfig:
    try:
        return SearchConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise FpnasError(f"invalid search settings ({source}): {problems}") from None


def save_config(config: SearchConfig, path: Path) -> None:
    path.write_text(json.dumps(config.model_dump(), indent=2) + "\n")


def load_saved_config(path: Path) -> SearchConfig:
    try:
        return make_config(json.loads(path.read_text()), str(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise FpnasError(f"{path}: cannot read the run's configuration ({exc})") from None
