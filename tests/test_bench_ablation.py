"""bench/ablation.py's bookkeeping: ratios against PARSEC are taken per seed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def ablation():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("ablation", BENCH / "ablation.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["ablation"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("ablation", None)
        sys.path.remove(str(BENCH))


def row(strategy: str, seed: int, samples: int, wall: float, acc: float) -> dict:
    return {
        "strategy": strategy,
        "seed": seed,
        "samples": samples,
        "trained": samples,
        "wall_s": wall,
        "final_entropy": 1.0,
        "flops": 1_000_000,
        "supernet_acc": 0.8,
        "test_acc": acc,
    }


def test_ratios_are_against_parsec_of_the_same_seed(ablation) -> None:
    rows = [
        row("parsec", 0, 1000, 100.0, 0.80),
        row("parsec", 1, 2000, 300.0, 0.90),
        row("fpnas", 0, 400, 50.0, 0.81),
        row("fpnas", 1, 500, 100.0, 0.88),
    ]
    summary = ablation.summarise(rows, ["parsec", "fpnas"])
    fp = summary["fpnas"]
    assert fp["fewer_samples"]["per_seed"] == [0.6, 0.75]
    assert fp["speedup"]["per_seed"] == [2.0, 3.0]
    assert fp["speedup"]["min"] == 2.0 and fp["speedup"]["max"] == 3.0
    assert fp["acc_points"]["per_seed"] == pytest.approx([1.0, -2.0])
    assert fp["samples"]["mean"] == 450.0
    # PARSEC against itself: no ratio, and its own spread over seeds.
    assert summary["parsec"]["speedup"]["mean"] == 1.0
    assert summary["parsec"]["wall_s"]["std"] == pytest.approx(141.42, abs=0.01)


def test_every_strategy_is_a_distinct_search(ablation) -> None:
    flags = {name: tuple(f) for name, f in ablation.STRATEGIES.items()}
    assert len(set(flags.values())) == len(flags)
    assert flags["parsec"][2:4] == ("--k", "14")
    assert set(ablation.DEFAULT_STRATEGIES) <= set(flags)
