"""The analytical cost model against the real counters on the standalone networks.

FLOPS must equal `FlopCounterMode` total / 2 and params `sum(p.numel())` exactly, for
random architectures of every bundled space; MobileNetV2 must match torchvision's; the
exact min/max must equal a brute-force enumeration of small spaces.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from spaces_for_tests import BUNDLED, bundled_or_python, mobilenet_v2, tiny
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from fpnas_dsl import cost
from fpnas_dsl.ir import Space, decode, uniform_samples
from fpnas_dsl.nn import build_network

SMALL = 36  # odd sizes on the way down (36, 18, 9, 5, 3, 2)

TINY_VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "tiny-output": {"expansion_of": "output"},
    "tiny-forbid": {"skip_mismatch": "forbid"},
    "tiny-shortcut": {"skip_mismatch": "shortcut"},
    "tiny-se-input": {"se_relative_to": "input"},
    "tiny-block": {"block_scope": True},
    "tiny-nohead": {"head": False},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def measured(space: Space, idx: np.ndarray) -> tuple[int, int]:
    """(FlopCounterMode total / 2, sum of numel) of the standalone network, batch 1.

    Built on the meta device and given uninitialised CPU memory: counting needs the
    shapes, not the values."""
    with torch.device("meta"):
        net = build_network(space, idx, init=False)
    net = net.to_empty(device="cpu").eval()
    x = torch.randn(1, space.in_channels, space.resolution, space.resolution)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2, sum(p.numel() for p in net.parameters())


def check_against_counters(space: Space, idx: np.ndarray) -> None:
    flops, params = cost.costs(space, idx)
    for i in range(len(idx)):
        got = (int(flops[i]), int(params[i]))
        assert got == measured(space, idx[i]), f"{space.name} architecture {i}"


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_space_small_resolution(name: str) -> None:
    space = bundled_or_python(name).with_input(resolution=SMALL)
    count = 1 if name.startswith("mobilenet_v2") else 100
    check_against_counters(space, uniform_samples(space, count, seed=BUNDLED.index(name)))


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_space_own_resolution(name: str) -> None:
    space = bundled_or_python(name)
    check_against_counters(space, uniform_samples(space, 5, seed=100))


@pytest.mark.parametrize("variant", TINY_VARIANTS)
def test_tiny_variants(variant: str) -> None:
    """Corners: expansion of the output, skip refused, SE of the input, per-block
    decisions, no head and two fully connected layers."""
    space = tiny(resolution=20, **TINY_VARIANTS[variant])
    check_against_counters(space, uniform_samples(space, 40, seed=7))


@pytest.mark.parametrize(
    ("name", "width", "expected"),
    [("mobilenet_v2", 1.0, (300_774_272, 3_504_872)), ("mobilenet_v2_035", 0.35, None)],
)
def test_mobilenet_v2_matches_torchvision(
    name: str, width: float, expected: tuple[int, int] | None
) -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.mobilenet_v2(width_mult=width).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        reference(torch.randn(1, 3, 224, 224))
    ref_flops = counter.get_total_flops() // 2
    ref_params = sum(p.numel() for p in reference.parameters())
    if expected is not None:
        assert (ref_flops, ref_params) == expected
    for space in (bundled_or_python(name), mobilenet_v2(width=width)):
        idx = uniform_samples(space, 1)
        assert cost.flops(space, idx)[0] == ref_flops
        assert cost.params(space, idx)[0] == ref_params
        assert measured(space, idx[0]) == (ref_flops, ref_params)
        r = cost.cost_range(space)
        assert r["flops_min"] == r["flops_median"] == r["flops_max"] == ref_flops
        assert r["params_min"] == r["params_median"] == r["params_max"] == ref_params


def all_architectures(space: Space) -> np.ndarray:
    lay = space.layout
    cells = [
        (d, v, c) for d, dec in enumerate(lay.decisions) for v, c in enumerate(dec.cardinalities)
    ]
    grids = itertools.product(*(range(c) for _, _, c in cells))
    combos = np.array(list(grids), dtype=np.int64)
    idx = np.zeros((len(combos), len(lay.decisions), lay.max_variables), dtype=np.int64)
    for k, (d, v, _) in enumerate(cells):
        idx[:, d, v] = combos[:, k]
    return idx


@pytest.mark.parametrize("variant", TINY_VARIANTS)
def test_exact_range_equals_brute_force(variant: str) -> None:
    space = tiny(**TINY_VARIANTS[variant])
    idx = all_architectures(space)
    assert len(idx) > 1000
    flops, params = cost.costs(space, idx)
    pooled = cost.flops(space, idx, count_pool=True)
    model = cost.cost_model(space)
    for metric, values in (("flops", flops), ("flops_pool", pooled), ("params", params)):
        assert model.extreme(metric, "min") == values.min(), metric  # type: ignore[arg-type]
        assert model.extreme(metric, "max") == values.max(), metric  # type: ignore[arg-type]
    r = cost.cost_range(space, samples=501, seed=3)
    assert (r["flops_min"], r["flops_max"]) == (flops.min(), flops.max())
    assert (r["params_min"], r["params_max"]) == (params.min(), params.max())
    sample = cost.flops(space, uniform_samples(space, 501, seed=3))
    assert r["flops_median"] == int(np.sort(sample)[250])


def test_range_brackets_samples_of_bundled_spaces() -> None:
    for name in BUNDLED:
        space = bundled_or_python(name)
        r = cost.cost_range(space, samples=2000)
        f, p = cost.costs(space, uniform_samples(space, 2000, seed=1))
        assert r["flops_min"] <= f.min() <= r["flops_median"] <= f.max() <= r["flops_max"]
        assert r["params_min"] <= p.min() <= r["params_median"] <= p.max() <= r["params_max"]


def test_batch_equals_one_by_one() -> None:
    for name in ("fbnetv2_f_fine", "fpnas_l2"):
        space = bundled_or_python(name)
        idx = uniform_samples(space, 64, seed=11)
        flops, params = cost.costs(space, idx)
        assert flops.dtype == params.dtype == np.int64 and flops.shape == (64,)
        assert np.array_equal(flops, cost.flops(space, idx))
        assert np.array_equal(params, cost.params(space, idx))
        for i in range(len(idx)):
            assert cost.flops(space, idx[i]) == flops[i]  # one [D, V] array -> a scalar
            assert cost.arch_cost(space, decode(space, idx[i])) == (flops[i], params[i])
        grid = cost.flops(space, idx.reshape(8, 8, *idx.shape[1:]))
        assert np.array_equal(grid.ravel(), flops)
    space = tiny()
    many = uniform_samples(space, 70_000, seed=12)  # priced in chunks
    f, p = cost.costs(space, many)
    parts = [cost.costs(space, many[i : i + 7000]) for i in range(0, 70_000, 7000)]
    assert np.array_equal(f, np.concatenate([q[0] for q in parts]))
    assert np.array_equal(p, np.concatenate([q[1] for q in parts]))


class PoolCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Elements entering every mean over the spatial axes (the global pools)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.elements = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten.mean.dim:
            self.elements += args[0][0].numel()
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["fbnetv2_f_pp", "tiny"])
def test_count_pool(name: str) -> None:
    space = tiny() if name == "tiny" else bundled_or_python(name).with_input(resolution=SMALL)
    idx = uniform_samples(space, 10, seed=5)
    extra = cost.flops(space, idx, count_pool=True) - cost.flops(space, idx)
    for i in range(len(idx)):
        net = build_network(space, idx[i]).eval()
        counter = PoolCounter()
        with torch.no_grad(), counter:
            net(torch.randn(1, space.in_channels, space.resolution, space.resolution))
        assert extra[i] == counter.elements


def test_bad_indices_are_refused() -> None:
    space = tiny()
    idx = uniform_samples(space, 3)
    with pytest.raises(ValueError, match="shape"):
        cost.flops(space, idx[:, :1])
    bad = idx.copy()
    bad[0, 0, 0] = 99
    with pytest.raises(ValueError, match="out of range"):
        cost.flops(space, bad)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="out of range"):
        cost.params(space, bad)
    with pytest.raises(ValueError, match="integers"):
        cost.flops(space, idx.astype(np.float64))


def test_cost_model_is_cached_per_space() -> None:
    a, b = tiny(), tiny()
    assert cost.cost_model(a) is cost.cost_model(b)
    assert cost.cost_model(a) is not cost.cost_model(a.with_input(resolution=32))


# ------------------------------------------------------------------ `fpnas cost`


def fpnas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fpnas_dsl", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def parser_available() -> None:
    pytest.importorskip("fpnas_dsl.parser")


def test_cli_cost(tmp_path: Path, parser_available: None) -> None:
    from fpnas_dsl.parser import load_space

    space = load_space("fbnetv2_f")
    idx = uniform_samples(space, 1, seed=4)[0]
    arch = decode(space, idx)
    path = tmp_path / "arch.json"
    path.write_text(arch.model_dump_json())
    flops, params = cost.arch_cost(space, arch)
    done = fpnas("cost", "fbnetv2_f", str(path))
    assert done.returncode == 0, done.stderr
    assert f"({flops:,})" in done.stdout and f"({params:,})" in done.stdout
    done = fpnas("cost", "fbnetv2_f", str(path), "--json", "--resolution", "64")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    small = space.with_input(resolution=64)
    assert (out["flops"], out["params"]) == cost.arch_cost(small, decode(small, idx))
    assert out["resolution"] == 64


def test_cli_cost_errors(tmp_path: Path, parser_available: None) -> None:
    from fpnas_dsl.parser import load_space

    other = load_space("fbnetv2_f_pp")
    foreign = tmp_path / "foreign.json"
    foreign.write_text(decode(other, uniform_samples(other, 1)[0]).model_dump_json())
    renamed = tmp_path / "renamed.json"
    doc = json.loads(foreign.read_text())
    doc["space"] = "fbnetv2_f"
    doc["blocks"][-1]["attention"] = "sa4"
    renamed.write_text(json.dumps(doc))
    broken = tmp_path / "broken.json"
    broken.write_text('{"blocks": [')
    missing_key = tmp_path / "missing.json"
    missing_key.write_text(json.dumps({"blocks": [{"kernel": 3}]}))
    cases = {
        str(tmp_path / "absent.json"): "no such file",
        str(broken): "not valid JSON",
        str(foreign): "architecture of space 'fbnetv2_f_pp'",
        str(renamed): "is not among ['none', 'se']",
        str(missing_key): "invalid architecture",
        str(tmp_path): "directory",
    }
    for arg, message in cases.items():
        done = fpnas("cost", "fbnetv2_f", arg)
        assert done.returncode == 2, (arg, done.stdout)
        assert message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
