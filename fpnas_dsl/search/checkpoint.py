"""Search checkpoints: written under `fpnas_dsl.runfiles`' durability policy (a synced
temporary file renamed over the last one), refused whole when corrupt or from another
space, never half-loaded."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Space
from fpnas_dsl.runfiles import SEARCH_CHECKPOINT, save_torch_atomic

FORMAT = "fpnas-search-checkpoint/1"
CHECKPOINT = SEARCH_CHECKPOINT
REQUIRED = (
    "format",
    "space_digest",
    "epoch",
    "step",
    "supernet",
    "optimizer",
    "scheduler",
    "distribution",
    "torch_rng",
    "samples",
    "wall",
)


def space_digest(space: Space) -> str:
    """What the space is, whatever file it was read from or where that file lives."""
    text = json.dumps(_without_files(space.model_dump(mode="json")), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_files(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_files(v) for k, v in node.items() if k not in ("file", "source")}
    if isinstance(node, list):
        return [_without_files(v) for v in node]
    return node


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    path = run_dir / CHECKPOINT
    save_torch_atomic({"format": FORMAT, **state}, path)
    return path


def load_checkpoint(path: Path, space: Space | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint; any problem is one FpnasError naming the file."""
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FpnasError(f"{path}: no checkpoint (a run writes one at the end of each epoch)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        AttributeError,
        ImportError,
    ) as exc:
        raise FpnasError(
            f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FpnasError(f"{path}: not an fpnas search checkpoint (expected format {FORMAT})")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise FpnasError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    if space is not None and state["space_digest"] != space_digest(space):
        raise FpnasError(
            f"{path}: checkpoint of another space (digest {state['space_digest']}, "
            f"this run's space has {space_digest(space)})"
        )
    return state


def load_supernet_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The supernet's weights from a run directory's checkpoint."""
    weights: dict[str, torch.Tensor] = load_checkpoint(Path(run_dir))["supernet"]
    return weights
