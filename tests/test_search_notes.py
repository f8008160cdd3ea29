"""What a search says before it starts: the declared input it re-targets to the data's,
and a `--steps-per-epoch` that the data cannot give."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_search import TINY, settings

from fpnas_dsl.errors import FpnasError
from fpnas_dsl.search.config import make_config
from fpnas_dsl.search.run import prepare_search


def said(tmp_path: Path, **overrides: object) -> list[str]:
    lines: list[str] = []
    prepare_search(make_config(settings(tmp_path / "run", **overrides)), log=lines.append)
    return [line for line in lines if "building the supernet" not in line]


def test_a_declared_input_that_the_data_replaces_is_named(tmp_path: Path) -> None:
    space = tmp_path / "rgb.space"
    text = Path(TINY).read_text().replace("input 16 x 16 x 1", "input 32 x 32 x 3")
    space.write_text(text.replace("classes 4", "classes 10"))
    (line,) = said(tmp_path / "a", space=str(space))
    assert "declares input 32 x 32 x 3 and 10 classes" in line
    assert "resolution 32 -> 16, channels 3 -> 1, classes 10 -> 4" in line
    assert "--resolution 32 --in-channels 3" in line and "FLOPS" in line
    # Given the declared input, nothing is re-targeted but the classes (the data's labels).
    (line,) = said(tmp_path / "b", space=str(space), resolution=32, in_channels=3)
    assert "classes 10 -> 4" in line and "resolution" not in line
    assert said(tmp_path / "c") == []  # the tiny space declares the data's input


def test_steps_per_epoch_the_data_cannot_give_is_said(tmp_path: Path) -> None:
    # 256 synthetic images: halves of 128, so 8 batches of 16.
    (line,) = said(tmp_path / "a", steps_per_epoch=20)
    assert "--steps-per-epoch 20 is not reached" in line and "runs 8 steps" in line
    assert said(tmp_path / "b", steps_per_epoch=8) == []


def test_checkpoint_every_and_training_policy_settings(tmp_path: Path) -> None:
    from fpnas_dsl.stopping import DEFAULT_CHECKPOINT_EVERY

    base = settings(tmp_path / "run")
    assert make_config(base).checkpoint_every == DEFAULT_CHECKPOINT_EVERY
    assert make_config({**base, "checkpoint_every": "2s"}).checkpoint_every == 2.0
    assert make_config({**base, "checkpoint_every": "1.5m"}).checkpoint_every == 90.0
    assert make_config({**base, "checkpoint_every": "off"}).checkpoint_every is None
    with pytest.raises(FpnasError, match=r"--checkpoint-every: 'soon' is not a duration"):
        make_config({**base, "checkpoint_every": "soon"})
    assert make_config(base).training_policy == "importance"
    with pytest.raises(FpnasError, match="--training-policy: Input should be 'importance'"):
        make_config({**base, "training_policy": "sandwich"})
