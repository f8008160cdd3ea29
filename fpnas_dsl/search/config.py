"""The search configuration: defaults from the paper, overridden by a TOML/YAML file,
overridden by command-line flags. The resolved configuration is written to the run
directory and is what `--resume` reads back."""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any, Literal

import tomllib
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fpnas_dsl.errors import FpnasError, clip
from fpnas_dsl.runfiles import write_json_atomic
from fpnas_dsl.stopping import DEFAULT_CHECKPOINT_EVERY, parse_duration

#: Paper (Section 5.1): 315 epochs, 45 of them warm-up; SGD lr 0.8 for batch 2048.
PAPER_EPOCHS = 315
PAPER_WARMUP = 45
PAPER_LR = 0.8
PAPER_BATCH = 2048


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    space: str
    target_flops: float | None = Field(
        None, gt=0, description="FLOPS (multiply-accumulates) target"
    )
    target_latency: float | None = Field(
        None, gt=0, description="latency target in seconds (`3ms` in a file or flag)"
    )
    latency_table: str | None = Field(None, description="the table of `fpnas latency`")
    latency_table_digest: str | None = Field(
        None, description="the table's digest when the run began (a resume checks it)"
    )
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
    training_policy: Literal["importance"] = Field(
        "importance",
        description="how the sampled strategies train the weights (fpnas_dsl.search.training): "
        "importance, the K samples weighted by m_omega (Algorithm 1)",
    )
    warmup_sampling: Literal["uniform", "fair"] = Field(
        "uniform",
        description="the K architectures of a uniform warm-up iteration: independent "
        "uniform draws, or fair (every choice of every variable K/c times, FairNAS)",
    )
    sandwich: bool = Field(
        False,
        description="uniform warm-up: the largest and smallest architectures train in "
        "every iteration too (AttentiveNAS's sandwich rule)",
    )
    distill: Literal["off", "largest"] = Field(
        "off",
        description="uniform warm-up: the largest architecture's predictions are the "
        "targets of the other passes (in-place distillation)",
    )
    distribution: Literal["mixed", "joint", "factorized"] = "mixed"
    strategy: Literal["fpnas", "dnas"] = Field(
        "fpnas",
        description="fpnas: the probabilistic strategies (sampling, distribution); "
        "dnas: FBNetV2's differentiable search (fpnas_dsl.search.dnas)",
    )
    temperature: float = Field(5.0, gt=0, description="dnas: initial Gumbel-softmax temperature")
    temperature_decay: float = Field(
        math.exp(-0.045), gt=0, le=1, description="dnas: temperature factor per epoch"
    )
    convert_epoch: int | None = Field(
        None, ge=1, description="mixed: epoch after which FD becomes JD (default: epochs x 80/315)"
    )
    eval_batches: int = Field(20, ge=1, description="test batches scored per epoch")
    seed: int = 0
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)
    workers: int | None = Field(
        None, ge=0, description="image-folder decoding processes per stream (default: CPUs)"
    )
    amp: Literal["off", "bf16", "fp16"] = "off"
    checkpoint_every: float | None = Field(
        DEFAULT_CHECKPOINT_EVERY,
        gt=0,
        description="seconds between checkpoints within an epoch (`5m` in a file or flag; "
        "off: at epoch ends only)",
    )
    out: str | None = None

    @field_validator("target_latency", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        from fpnas_dsl.latency import parse_duration

        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fill_derived(self) -> SearchConfig:
        if self.target_flops is None and self.target_latency is None:
            raise ValueError("give --target-flops, --target-latency, or both")
        if (self.target_latency is None) != (self.latency_table is None):
            raise ValueError("--target-latency and --latency-table go together")
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
        if self.strategy == "dnas":
            # FBNetV2's distribution is factorized; FD->JD conversion has no DNAS meaning.
            if "distribution" in self.model_fields_set and self.distribution != "factorized":
                raise ValueError(
                    f"--distribution {self.distribution}: DNAS (--strategy dnas) searches "
                    f"a factorized distribution; leave it out or give factorized"
                )
            object.__setattr__(self, "distribution", "factorized")
            # Its cost is the expected FLOPS under the relaxed weights; a measured
            # latency has no such expectation here.
            if self.target_latency is not None or self.target_flops is None:
                raise ValueError(
                    "DNAS (--strategy dnas) searches for a FLOPS target: give "
                    "--target-flops and leave out --target-latency (latency targets are "
                    "for the probabilistic strategies)"
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
    """A TOML or YAML file of SearchConfig fields (dashes or underscores); an unknown key
    or a file that is not a table of settings is an FpnasError naming the file."""
    kind = "TOML" if path.suffix == ".toml" else "YAML"
    if path.is_dir():
        raise FpnasError(f"{path}: is a directory, expected a {kind} file of search settings")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FpnasError(f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise FpnasError(f"{path}: not a text file (expected {kind} search settings)") from None
    except OSError as exc:
        raise FpnasError(f"{path}: cannot read config ({exc.strerror})") from None
    if "\x00" in text:
        raise FpnasError(f"{path}: a binary file, not {kind} search settings")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise FpnasError(f"{path}: not valid {kind}: {clip(str(exc))}") from None
    if data is None or data == {}:
        raise FpnasError(f"{path}: holds no settings (an empty {kind} file)")
    if not isinstance(data, dict):
        raise FpnasError(f"{path}: expected a table of settings at the top level")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    fields = list(SearchConfig.model_fields)
    for key in values:
        if key not in SearchConfig.model_fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FpnasError(
                f"{path}: unknown setting {key!r}{hint}; the settings are the flags of "
                f"`fpnas search` without the dashes: {', '.join(fields)}"
            )
    return values


def origin_name(key: str, origins: dict[str, str] | None) -> str:
    """Where a setting was given: `--target-flops`, or `beta (in search.yaml)`."""
    where = (origins or {}).get(key)
    if where is None or where == "command line":
        return "--" + key.replace("_", "-")
    return f"{key} (in {where})"


def make_config(
    values: dict[str, Any], source: str | None = None, origins: dict[str, str] | None = None
) -> SearchConfig:
    """Validate settings; an invalid one is an FpnasError naming where it was given
    (`origins`: key -> a file name or "command line"; `source`: for every key)."""
    # One source for every key: named once, in the head of the message.
    single = source is not None and origins is None
    try:
        return SearchConfig.model_validate(values)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            key = str(e["loc"][0]) if e["loc"] else ""
            msg = e["msg"].removeprefix("Value error, ")
            name = key if single else origin_name(key, origins)
            problems.append(f"{name}: {msg}" if key else msg)
        where = f" in {source}" if source and source != "command line" else ""
        raise FpnasError(f"invalid search settings{where}: {'; '.join(problems)}") from None


def save_config(config: SearchConfig, path: Path) -> None:
    write_json_atomic(path, config.model_dump())


def load_saved_config(path: Path) -> SearchConfig:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FpnasError(
            f"{path}: cannot read the run's configuration ({clip(str(exc))})"
        ) from None
    if not isinstance(doc, dict):
        raise FpnasError(f"{path}: not a search configuration (expected a JSON object)")
    return make_config(doc, str(path))
