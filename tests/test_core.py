"""The C++ distribution core (fpnas_dsl._core) through its Python face, Distribution.

References are independent: torch.distributions / torch.autograd / torch.optim.Adam for the
maths, numpy's ravel_multi_index for the joint ordering, a pure-Python xoshiro256** for the
generator.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from fpnas_dsl.distribution import (
    MAX_CATEGORICAL,
    Distribution,
    Mode,
    fbnetv2_f_layout,
    self_check,
)

Layout = list[list[int]]

PAPER_10: Layout = [[3, 2, 2, 6, c] for c in (2, 3, 3, 4, 4, 5, 5, 6, 10, 10)]
PAPER_32: Layout = [[3, 2, 4, 7, 8] for _ in range(32)]
FBNETV2_F: Layout = fbnetv2_f_layout()
RAGGED: Layout = [[3], [2, 2, 3], [4, 1, 2], [5, 3], [1]]
LAYOUTS = {"paper10": PAPER_10, "paper32": PAPER_32, "fbnetv2f": FBNETV2_F, "ragged": RAGGED}
MIXED_MODES: list[Mode] = ["joint", "factorized", "joint", "factorized", "joint"]


def ln_count(layout: Layout) -> float:
    return math.fsum(math.log(c) for decision in layout for c in decision)


def randomized(layout: Layout, mode: Mode | Sequence[Mode], seed: int = 0) -> Distribution:
    dist = Distribution(layout, mode, seed=seed)
    dist.logits[:] = np.random.default_rng(seed).normal(scale=1.5, size=dist.num_params)
    return dist


def random_architectures(layout: Layout, k: int, seed: int = 1) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    out = np.zeros((k, len(layout), max(map(len, layout))), dtype=np.int64)
    for d, cards in enumerate(layout):
        for v, c in enumerate(cards):
            out[:, d, v] = rng.integers(0, c, size=k)
    return out


def all_architectures(layout: Layout) -> np.ndarray[Any, Any]:
    """Every architecture of a small layout, in row-major order over all variables."""
    flat = [c for decision in layout for c in decision]
    grid = np.indices(flat).reshape(len(flat), -1).T
    out = np.zeros((len(grid), len(layout), max(map(len, layout))), dtype=np.int64)
    i = 0
    for d, cards in enumerate(layout):
        out[:, d, : len(cards)] = grid[:, i : i + len(cards)]
        i += len(cards)
    return out


def torch_log_prob(
    logits: torch.Tensor, layout: Layout, modes: Sequence[str], samples: np.ndarray[Any, Any]
) -> torch.Tensor:
    """log P(A) with torch.distributions.Categorical, one per categorical."""
    total = torch.zeros(len(samples), dtype=torch.float64)
    offset = 0
    for d, (cards, mode) in enumerate(zip(layout, modes, strict=True)):
        if mode == "joint":
            n = math.prod(cards)
            flat = np.ravel_multi_index(tuple(samples[:, d, : len(cards)].T), cards)  # C order
            cat = torch.distributions.Categorical(logits=logits[offset : offset + n])
            total = total + cat.log_prob(torch.from_numpy(flat))
            offset += n
            continue
        for v, c in enumerate(cards):
            cat = torch.distributions.Categorical(logits=logits[offset : offset + c])
            total = total + cat.log_prob(torch.from_numpy(samples[:, d, v]))
            offset += c
    return total


# ---------------------------------------------------------------------------- entropy and K


@pytest.mark.parametrize("mode", ["factorized", "joint"])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_uniform_entropy_is_ln_count(name: str, mode: Mode) -> None:
    layout = LAYOUTS[name]
    dist = Distribution(layout, mode)
    assert dist.entropy() == pytest.approx(ln_count(layout), abs=1e-10)
    per = dist.entropy_per_decision()
    assert per.shape == (len(layout),)
    np.testing.assert_allclose(per, [ln_count([d]) for d in layout], atol=1e-12)
    expected = sum(map(sum, layout)) if mode == "factorized" else sum(map(math.prod, layout))
    assert dist.num_params == expected


@pytest.mark.parametrize("mode", ["factorized", "joint"])
def test_fbnetv2_f_sample_size_is_14(mode: Mode) -> None:
    dist = Distribution(FBNETV2_F, mode)
    assert ln_count(FBNETV2_F) == pytest.approx(56.2537, abs=1e-4)
    assert dist.entropy() == pytest.approx(56.2537, abs=1e-4)
    assert dist.sample_size(0.25) == 14
    assert dist.sample_size(0.0) == 1
    assert dist.sample_size(1.0) == 56


@pytest.mark.parametrize("mode", ["factorized", "joint"])
def test_entropy_matches_torch(mode: Mode) -> None:
    dist = randomized(RAGGED, mode)
    arch = all_architectures(RAGGED)
    logits = torch.from_numpy(dist.logits.copy())
    log_p = torch_log_prob(logits, RAGGED, dist.modes, arch)
    expected = float(-(log_p.exp() * log_p).sum())
    assert dist.entropy() == pytest.approx(expected, abs=1e-12)
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_entropy_with_zero_probabilities() -> None:
    dist = Distribution([[3, 2]], "factorized")
    dist.logits[:] = [0.0, -np.inf, 0.0, 5.0, -np.inf]
    assert dist.entropy() == pytest.approx(math.log(2), abs=1e-15)
    samples = dist.sample(200)
    assert set(samples[:, 0, 0]) == {0, 2} and set(samples[:, 0, 1]) == {0}


# ---------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("mode", ["factorized", "joint"])
def test_sample_frequencies_pass_chi_square(mode: Mode) -> None:
    layout = [[3, 2], [4]]
    dist = randomized(layout, mode, seed=3)
    n = 40_000
    counts = Counter(map(tuple, dist.sample(n).reshape(n, -1).tolist()))
    arch = all_architectures(layout)
    observed = [counts[tuple(row)] for row in arch.reshape(len(arch), -1).tolist()]
    assert sum(observed) == n  # nothing outside the 24 architectures
    expected = np.exp(dist.log_prob(arch))
    assert stats.chisquare(observed, expected / expected.sum() * n).pvalue > 0.01


def test_sample_frequencies_of_one_large_joint_decision() -> None:
    dist = randomized([[3, 2, 4, 7, 8]], "joint", seed=5)
    n = 200_000
    samples = dist.sample(n)[:, 0, :]
    observed = np.bincount(np.ravel_multi_index(tuple(samples.T), (3, 2, 4, 7, 8)), minlength=1344)
    expected = np.exp(dist.log_prob(all_architectures([[3, 2, 4, 7, 8]]))) * n
    # Pool the sparse tail so every cell expects >= 5 counts.
    order = np.argsort(expected)
    cut = np.searchsorted(np.cumsum(expected[order]), 50.0)
    big = order[cut:]
    obs = np.append(observed[big], observed[order[:cut]].sum())
    exp = np.append(expected[big], expected[order[:cut]].sum())
    assert stats.chisquare(obs, exp * n / exp.sum()).pvalue > 0.01


@pytest.mark.parametrize("mode", ["factorized", "joint"])
def test_samples_are_in_range_and_padded_with_zero(mode: Mode) -> None:
    dist = randomized(RAGGED, mode)
    samples = dist.sample(500)
    assert samples.dtype == np.int64 and samples.shape == (500, 5, 3)
    assert samples.flags.c_contiguous and samples.flags.writeable
    for d, cards in enumerate(RAGGED):
        for v in range(3):
            limit = cards[v] if v < len(cards) else 1
            assert samples[:, d, v].min() >= 0 and samples[:, d, v].max() < limit


def _xoshiro_uniforms(seed: int, count: int) -> list[float]:
    """Reference splitmix64 + xoshiro256**, top 53 bits -> [0, 1)."""
    mask = 2**64 - 1

    def splitmix(x: int) -> tuple[int, int]:
        x = (x + 0x9E3779B97F4A7C15) & mask
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return x, z ^ (z >> 31)

    def rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & mask

    s = []
    for _ in range(4):
        seed, word = splitmix(seed)
        s.append(word)
    out = []
    for _ in range(count):
        result = (rotl((s[1] * 5) & mask, 7) * 9) & mask
        t = (s[1] << 17) & mask
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        out.append((result >> 11) * 2.0**-53)
    return out


@pytest.mark.parametrize("seed", [0, 42, 2**64 - 1])
def test_generator_is_the_documented_xoshiro(seed: int) -> None:
    # Uniform logits make the CDF exact integers, so the index is floor(u * n) on any libm.
    n = 1000
    samples = Distribution([[n], [7, 3]], "factorized", seed=seed).sample(50)
    u = _xoshiro_uniforms(seed, 150)
    assert samples[:, 0, 0].tolist() == [math.floor(x * n) for x in u[0::3]]
    assert samples[:, 1, 0].tolist() == [math.floor(x * 7) for x in u[1::3]]
    assert samples[:, 1, 1].tolist() == [math.floor(x * 3) for x in u[2::3]]


PINNED = {
    "factorized": [
        [0, 3, 0, 0, 0, 0], [2, 1, 3, 0, 0, 0], [2, 0, 4, 1, 0, 0], [2, 2, 4, 0, 0, 0],
        [0, 3, 4, 0, 0, 0], [2, 1, 1, 1, 0, 0], [1, 0, 3, 0, 0, 0], [1, 2, 4, 1, 0, 0],
    ],
    "joint": [
        [1, 1, 1, 1, 0, 0], [1, 1, 4, 0, 0, 0], [2, 3, 1, 0, 0, 0], [2, 1, 3, 0, 0, 0],
        [2, 2, 2, 0, 0, 0], [2, 3, 1, 1, 0, 0], [2, 3, 3, 0, 0, 0], [2, 3, 1, 0, 0, 0],
    ],
}  # fmt: skip


@pytest.mark.parametrize("mode", ["factorized", "joint"])
def test_samples_for_a_seed_are_pinned(mode: Mode) -> None:
    # The core computes its CDFs with its own exp and a fixed summation order, so these hold
    # on every platform; a change here breaks resuming old runs and must be deliberate.
    dist = Distribution([[3, 4, 5], [2]], mode, seed=2024)
    dist.logits[:] = np.linspace(-2.0, 3.0, dist.num_params)
    assert dist.sample(8).reshape(8, -1).tolist() == PINNED[mode]


# ---------------------------------------------------------------------------- determinism, state


@pytest.mark.parametrize("mode", ["factorized", "joint"])
def test_same_seed_same_samples(mode: Mode) -> None:
    a, b = randomized(PAPER_10, mode, seed=7), randomized(PAPER_10, mode, seed=7)
    np.testing.assert_array_equal(a.sample(30), b.sample(30))
    np.testing.assert_array_equal(np.concatenate([a.sample(5), a.sample(9)]), b.sample(14))
    assert not np.array_equal(randomized(PAPER_10, mode, seed=8).sample(30), a.sample(30))
    a.set_seed(7)
    np.testing.assert_array_equal(a.sample(30), randomized(PAPER_10, mode, seed=7).sample(30))


def _train(dist: Distribution, steps: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(steps):
        samples = dist.sample(14)
        dist.step(samples, rng.normal(size=14), lr=0.05)


def test_state_round_trip_into_fresh_object_mid_stream() -> None:
    dist = randomized(PAPER_10, "factorized", seed=11)
    _train(dist, 3)
    dist.to_joint([0, 4])
    _train(dist, 2)
    state = pickle.loads(pickle.dumps(dist.state_dict()))
    expected = [dist.sample(14) for _ in range(3)]
    _train(dist, 2)
    final = dist.state_dict()

    fresh = Distribution(PAPER_10, "factorized", seed=999)
    fresh.load_state_dict(state)
    assert fresh.modes == tuple("joint" if d in (0, 4) else "factorized" for d in range(10))
    for want in expected:
        np.testing.assert_array_equal(fresh.sample(14), want)
    _train(fresh, 2)
    for key in ("logits", "adam_m", "adam_v", "adam_step", "rng"):
        np.testing.assert_array_equal(fresh.state_dict()[key], final[key])


def test_state_survives_torch_save(tmp_path: Any) -> None:
    dist = randomized(RAGGED, MIXED_MODES)
    _train(dist, 2)
    torch.save(dist.state_dict(), tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=False)
    fresh = Distribution(RAGGED)
    fresh.load_state_dict(loaded)
    np.testing.assert_array_equal(fresh.sample(20), dist.sample(20))


def test_state_is_a_copy_and_load_keeps_the_view() -> None:
    dist = randomized(RAGGED, "factorized")
    view = dist.logits
    state = dist.state_dict()
    state["logits"][:] = 0.0
    assert dist.entropy() < ln_count(RAGGED) - 0.1
    dist.load_state_dict(state)  # same modes: the buffer, and so the view, is kept
    assert np.shares_memory(view, dist.logits)
    assert dist.entropy() == pytest.approx(ln_count(RAGGED), abs=1e-12)


def test_logits_view_is_alpha() -> None:
    dist = Distribution(RAGGED, "factorized")
    view = dist.logits
    assert view.dtype == np.float64 and view.flags.writeable
    assert np.shares_memory(view, dist.logits)
    view[:3] = [10.0, 0.0, 0.0]
    assert dist.argmax()[0, 0] == 0
    assert dist.entropy_per_decision()[0] < math.log(3) - 1.0
    dist.to_joint()  # a new buffer: the old view is detached but still safe to read
    assert not np.shares_memory(view, dist.logits)
    assert view[0] == 10.0
    del dist
    assert view.sum() == 10.0


# ---------------------------------------------------------------------------- FD -> JD


@pytest.mark.parametrize("name", ["paper10", "paper32", "fbnetv2f", "ragged"])
def test_to_joint_keeps_every_probability(name: str) -> None:
    layout = LAYOUTS[name]
    dist = randomized(layout, "factorized", seed=2)
    arch = random_architectures(layout, 10_000)
    log_p, entropy, per = dist.log_prob(arch), dist.entropy(), dist.entropy_per_decision()
    dist.to_joint()
    assert dist.modes == ("joint",) * len(layout)
    assert dist.num_params == sum(map(math.prod, layout))
    assert np.max(np.abs(dist.log_prob(arch) - log_p)) <= 1e-12
    assert abs(dist.entropy() - entropy) <= 1e-12
    np.testing.assert_allclose(dist.entropy_per_decision(), per, rtol=0, atol=1e-13)


def test_partial_to_joint_and_idempotence() -> None:
    dist = randomized(RAGGED, "factorized")
    arch = all_architectures(RAGGED)
    log_p = dist.log_prob(arch)
    dist.to_joint([1, 3])
    assert dist.modes == ("factorized", "joint", "factorized", "joint", "factorized")
    view = dist.logits
    dist.to_joint([1, 3])  # already joint: nothing changes, not even the buffer
    assert np.shares_memory(view, dist.logits)
    np.testing.assert_allclose(dist.log_prob(arch), log_p, rtol=0, atol=1e-13)
    dist.to_joint()
    np.testing.assert_allclose(dist.log_prob(arch), log_p, rtol=0, atol=1e-13)
    assert np.exp(dist.log_prob(arch)).sum() == pytest.approx(1.0, abs=1e-12)


def test_to_joint_resets_adam_for_converted_decisions_only() -> None:
    dist = randomized(RAGGED, "factorized")
    _train(dist, 3)
    before = dist.state_dict()
    dist.to_joint([2])
    after = dist.state_dict()
    np.testing.assert_array_equal(after["adam_step"], [3, 3, 0, 3, 3])
    start, size = 3 + 7, 4 * 1 * 2  # decision 2 follows 3 + (2 + 2 + 3) logits
    assert not after["adam_m"][start : start + size].any()
    assert not after["adam_v"][start : start + size].any()
    np.testing.assert_array_equal(after["adam_m"][:start], before["adam_m"][:start])
    np.testing.assert_array_equal(after["adam_m"][start + size :], before["adam_m"][start + 7 :])


# ---------------------------------------------------------------------------- log-prob, gradient

MODES: dict[str, list[Mode]] = {
    "fd": ["factorized"] * 5,
    "jd": ["joint"] * 5,
    "mixed": MIXED_MODES,
}


@pytest.mark.parametrize("modes", sorted(MODES))
def test_log_prob_and_grad_match_torch_autograd(modes: str) -> None:
    dist = randomized(RAGGED, MODES[modes], seed=4)
    samples = dist.sample(64)
    weights = np.random.default_rng(4).normal(size=64)
    logits = torch.tensor(dist.logits, dtype=torch.float64, requires_grad=True)
    log_p = torch_log_prob(logits, RAGGED, dist.modes, samples)
    np.testing.assert_allclose(dist.log_prob(samples), log_p.detach().numpy(), rtol=0, atol=1e-12)
    (-(torch.from_numpy(weights) * log_p).sum()).backward()
    assert logits.grad is not None
    np.testing.assert_allclose(dist.grad(samples, weights), logits.grad.numpy(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["factorized", "joint"])
def test_grad_matches_torch_on_the_paper_layout(mode: Mode) -> None:
    dist = randomized(PAPER_32, mode, seed=6)
    samples = dist.sample(14)
    weights = np.random.default_rng(6).normal(size=14)
    logits = torch.tensor(dist.logits, dtype=torch.float64, requires_grad=True)
    log_p = torch_log_prob(logits, PAPER_32, dist.modes, samples)
    (-(torch.from_numpy(weights) * log_p).sum()).backward()
    assert logits.grad is not None
    np.testing.assert_allclose(dist.grad(samples, weights), logits.grad.numpy(), rtol=0, atol=1e-9)


def test_empty_batch_has_zero_gradient() -> None:
    dist = randomized(RAGGED, "factorized")
    empty = np.zeros((0, 5, 3), dtype=np.int64)
    assert dist.log_prob(empty).shape == (0,)
    assert not dist.grad(empty, np.zeros(0)).any()


@pytest.mark.parametrize("mode", ["factorized", "joint"])
def test_argmax_is_the_most_probable_architecture(mode: Mode) -> None:
    dist = randomized(RAGGED, mode, seed=9)
    arch = all_architectures(RAGGED)
    best = arch[np.argmax(dist.log_prob(arch))]
    np.testing.assert_array_equal(dist.argmax(), best)
    dist.to_joint()
    np.testing.assert_array_equal(dist.argmax(), best)


# ---------------------------------------------------------------------------- Adam


@pytest.mark.parametrize("modes", sorted(MODES))
def test_adam_matches_torch_optim_adam(modes: str) -> None:
    dist = randomized(RAGGED, MODES[modes], seed=5)
    param = torch.tensor(dist.logits, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([param], lr=0.03)
    rng = np.random.default_rng(5)
    for _ in range(25):
        g = rng.normal(size=dist.num_params)
        dist.adam_step(g, 0.03)
        param.grad = torch.from_numpy(g.copy())
        opt.step()
    np.testing.assert_allclose(dist.logits, param.detach().numpy(), rtol=0, atol=1e-12)
    state = opt.state[param]
    np.testing.assert_allclose(dist.state_dict()["adam_m"], state["exp_avg"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(dist.state_dict()["adam_v"], state["exp_avg_sq"], rtol=0, atol=1e-15)


def test_step_is_grad_then_adam() -> None:
    a, b = (
        randomized(PAPER_10, MIXED_MODES * 2, seed=1),
        randomized(PAPER_10, MIXED_MODES * 2, seed=1),
    )
    rng = np.random.default_rng(1)
    for _ in range(5):
        samples, weights = a.sample(14), rng.normal(size=14)
        b.sample(14)
        a.step(samples, weights, 0.01)
        b.adam_step(b.grad(samples, weights), 0.01)
    np.testing.assert_array_equal(a.logits, b.logits)


# ---------------------------------------------------------------------------- bad input

GOOD = np.zeros((2, 5, 3), dtype=np.int64)


def _bad(index: tuple[int, int, int], value: int) -> np.ndarray[Any, Any]:
    arr = GOOD.copy()
    arr[index] = value
    return arr


BAD_INPUTS: list[tuple[str, Callable[[Distribution], object], type[Exception], str]] = [
    (
        "cardinality 0",
        lambda d: Distribution([[3, 0]]),
        ValueError,
        r"decision 0, variable 1: cardinality must be >= 1, got 0",
    ),
    (
        "negative cardinality",
        lambda d: Distribution([[2], [-1]]),
        ValueError,
        r"decision 1, variable 0: cardinality must be >= 1",
    ),
    ("empty layout", lambda d: Distribution([]), ValueError, r"at least one decision"),
    (
        "empty decision",
        lambda d: Distribution([[2], []]),
        ValueError,
        r"decision 1 has no variables",
    ),
    (
        "unknown mode",
        lambda d: Distribution([[2]], cast(Mode, "jointly")),
        ValueError,
        r"mode must be 'factorized' or 'joint'",
    ),
    (
        "mode count",
        lambda d: Distribution([[2], [3]], ["joint"]),
        ValueError,
        r"one mode per decision \(2\), got 1",
    ),
    (
        "joint too large",
        lambda d: Distribution([[2048, 2049]], "joint"),
        ValueError,
        r"decision 0: joint mode .* exceeds the limit of 4194304",
    ),
    (
        "to_joint too large",
        lambda d: Distribution([[2048, 4096]]).to_joint(),
        ValueError,
        r"exceeds the limit of 4194304 per joint decision",
    ),
    (
        "cardinality too large",
        lambda d: Distribution([[MAX_CATEGORICAL + 1]]),
        ValueError,
        r"exceeds the limit of 4194304 choices",
    ),
    (
        "too many logits",
        lambda d: Distribution([[MAX_CATEGORICAL] * 3]),
        ValueError,
        r"layout needs more than the limit of 8388608 logits",
    ),
    ("negative seed", lambda d: Distribution([[2]], seed=-1), ValueError, r"seed must be in"),
    (
        "K = 0",
        lambda d: d.sample(0),
        ValueError,
        r"K \(the number of samples\) must be >= 1, got 0",
    ),
    ("K < 0", lambda d: d.sample(-3), ValueError, r"must be >= 1, got -3"),
    ("K too large", lambda d: d.sample(2**40), ValueError, r"exceed the limit"),
    ("lambda < 0", lambda d: d.sample_size(-0.5), ValueError, r"lambda must be a finite number"),
    ("lambda nan", lambda d: d.sample_size(math.nan), ValueError, r"lambda .* got nan"),
    ("lambda inf", lambda d: d.sample_size(math.inf), ValueError, r"lambda .* got inf"),
    (
        "float samples",
        lambda d: d.log_prob(GOOD.astype(np.float64)),
        TypeError,
        r"samples must be an array of dtype int64, got float64",
    ),
    (
        "int32 samples",
        lambda d: d.grad(GOOD.astype(np.int32), np.ones(2)),
        TypeError,
        r"samples must be an array of dtype int64, got int32",
    ),
    (
        "rank 2",
        lambda d: d.log_prob(GOOD[0]),
        ValueError,
        r"samples must have shape \[K, 5, 3\] .*got \[5, 3\]",
    ),
    (
        "wrong width",
        lambda d: d.log_prob(np.zeros((2, 5, 4), np.int64)),
        ValueError,
        r"got \[2, 5, 4\]",
    ),
    (
        "wrong decisions",
        lambda d: d.log_prob(np.zeros((2, 4, 3), np.int64)),
        ValueError,
        r"got \[2, 4, 3\]",
    ),
    (
        "not contiguous",
        lambda d: d.log_prob(np.zeros((2, 5, 6), np.int64)[:, :, ::2]),
        ValueError,
        r"C-contiguous",
    ),
    (
        "index too large",
        lambda d: d.log_prob(_bad((1, 1, 2), 3)),
        ValueError,
        r"samples\[1, 1, 2\] = 3 is out of range: "
        r"variable 2 of decision 1 takes values in \[0, 3\)",
    ),
    (
        "negative index",
        lambda d: d.grad(_bad((0, 3, 0), -1), np.ones(2)),
        ValueError,
        r"samples\[0, 3, 0\] = -1 is out of range",
    ),
    (
        "padding not 0",
        lambda d: d.log_prob(_bad((1, 0, 1), 1)),
        ValueError,
        r"samples\[1, 0, 1\] = 1 must be 0: "
        r"decision 0 has 1 variables and padded slots are 0",
    ),
    (
        "weights length",
        lambda d: d.grad(GOOD, np.ones(3)),
        ValueError,
        r"weights must have shape \[2\] \(one per sample\), got \[3\]",
    ),
    (
        "weights rank",
        lambda d: d.step(GOOD, np.ones((2, 1)), 0.1),
        ValueError,
        r"weights must have shape \[2\]",
    ),
    (
        "weights dtype",
        lambda d: d.grad(GOOD, np.ones(2, np.float32)),
        TypeError,
        r"weights must be an array of dtype float64, got float32",
    ),
    (
        "weights nan",
        lambda d: d.grad(GOOD, np.array([1.0, np.nan])),
        ValueError,
        r"weights\[1\] must be finite",
    ),
    (
        "grad length",
        lambda d: d.adam_step(np.ones(3), 0.1),
        ValueError,
        r"grad must have shape \[26\] \(num_params\), got \[3\]",
    ),
    (
        "grad inf",
        lambda d: d.adam_step(np.full(26, np.inf), 0.1),
        ValueError,
        r"grad\[0\] must be finite",
    ),
    ("lr < 0", lambda d: d.adam_step(np.ones(26), -1.0), ValueError, r"lr must be a finite"),
    (
        "to_joint index",
        lambda d: d.to_joint([5]),
        ValueError,
        r"decision index 5 is out of range \[0, 5\)",
    ),
    (
        "state keys",
        lambda d: d.load_state_dict({"logits": d.logits}),
        ValueError,
        r"state is missing layout, modes, adam_m",
    ),
    (
        "state layout",
        lambda d: d.load_state_dict(Distribution([[2]]).state_dict()),
        ValueError,
        r"state is for layout \[\[2\]\]",
    ),
    (
        "state length",
        lambda d: d.load_state_dict({**d.state_dict(), "logits": np.ones(3)}),
        ValueError,
        r"state: logits must have 26 entries",
    ),
    (
        "state modes",
        lambda d: d.load_state_dict({**d.state_dict(), "modes": ["joint"] * 5}),
        ValueError,
        r"state: logits must have 39 entries for these modes",
    ),
    (
        "state rng zero",
        lambda d: d.load_state_dict({**d.state_dict(), "rng": np.zeros(4, np.uint64)}),
        ValueError,
        r"generator state \(rng\) must not be all zeros",
    ),
    (
        "state rng dtype",
        lambda d: d.load_state_dict({**d.state_dict(), "rng": np.ones(4)}),
        TypeError,
        r"rng must be an array of dtype uint64",
    ),
    (
        "state steps",
        lambda d: d.load_state_dict({**d.state_dict(), "adam_step": -np.ones(5, np.int64)}),
        ValueError,
        r"adam_step entries must be >= 0",
    ),
    (
        "state v < 0",
        lambda d: d.load_state_dict({**d.state_dict(), "adam_v": -np.ones(26)}),
        ValueError,
        r"adam_v\[0\] must be >= 0, got -1",
    ),
    (
        "state m nan",
        lambda d: d.load_state_dict({**d.state_dict(), "adam_m": np.full(26, np.nan)}),
        ValueError,
        r"adam_m\[0\] must not be NaN",
    ),
    (
        "state logits nan",
        lambda d: d.load_state_dict({**d.state_dict(), "logits": np.full(26, np.nan)}),
        ValueError,
        r"logits\[0\] must not be NaN or \+inf",
    ),
    (
        "weights huge",
        lambda d: d.grad(GOOD, np.array([1e308, -1e308])),
        ValueError,
        r"weights are too large",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_raises_documented_error(
    call: Callable[[Distribution], object], error: type[Exception], match: str
) -> None:
    dist = randomized(RAGGED, "factorized")
    before = dist.state_dict()
    with pytest.raises(error, match=match):
        call(dist)
    after = dist.state_dict()  # a refused call changes nothing
    for key in ("logits", "adam_m", "adam_v", "adam_step", "rng"):
        np.testing.assert_array_equal(after[key], before[key])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_logits_that_are_not_a_distribution_are_refused(bad: float) -> None:
    dist = Distribution(RAGGED)
    dist.logits[4] = bad
    calls = (dist.entropy, lambda: dist.sample(1), lambda: dist.log_prob(GOOD), dist.argmax)
    for call in (*calls, dist.to_joint):
        with pytest.raises(ValueError, match=r"logits of decision 1, variable 0 do not define"):
            call()
    dist.logits[4] = 0.0
    dist.logits[:3] = -np.inf
    with pytest.raises(ValueError, match=r"decision 0, variable 0 .* or are all -inf"):
        dist.sample(1)


dtypes = st.sampled_from([np.int64, np.int32, np.uint64, np.float64, np.float32, np.bool_])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = draw(dtypes)
    shape = draw(
        st.one_of(
            hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
            st.tuples(st.integers(0, 4), st.just(5), st.just(3)),
            st.just((26,)),
            st.just((27,)),
        )
    )
    elements = st.integers(-2, 6) if dtype in (np.int64, np.int32) else None
    arr = draw(hnp.arrays(dtype, shape, elements=elements))
    if draw(st.booleans()) and arr.ndim > 0 and arr.shape[-1] > 1:
        arr = arr[..., ::2]  # not C-contiguous
    return arr


lrs = st.one_of(st.floats(-1.0, 1.0), st.sampled_from([math.nan, math.inf, -math.inf, 1e308]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=arrays(), b=arrays(), lr=lrs)
def test_random_bad_arrays_only_raise_value_or_type_error(
    a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], lr: float
) -> None:
    dist = Distribution(RAGGED, MIXED_MODES)
    calls: list[Callable[[], object]] = [
        lambda: dist.log_prob(a),
        lambda: dist.grad(a, b),
        lambda: dist.step(a, b, lr),
        lambda: dist.adam_step(a, lr),
        lambda: dist.load_state_dict({**dist.state_dict(), "logits": a, "rng": b}),
        lambda: dist.load_state_dict({**dist.state_dict(), "adam_step": a}),
        lambda: dist.sample(int(a.size) - 2),
        dist.entropy,
        dist.argmax,
    ]
    for call in calls:
        with contextlib.suppress(ValueError, TypeError):
            call()


cardinalities = st.one_of(st.integers(-2, 40), st.sampled_from([MAX_CATEGORICAL + 1, 2**63, 2**64]))


@settings(max_examples=200, deadline=None)
@given(
    layout=st.lists(st.lists(cardinalities, max_size=4), max_size=4),
    mode=st.sampled_from(["factorized", "joint", "bogus"]),
)
def test_random_layouts_only_raise_value_or_type_error(layout: Layout, mode: str) -> None:
    try:
        dist = Distribution(layout, cast(Mode, mode))
    except (ValueError, TypeError):
        return
    assert dist.entropy() == pytest.approx(ln_count(layout), abs=1e-9)
    assert dist.sample(3).shape == (3, len(layout), max(map(len, layout)))


# ---------------------------------------------------------------------------- misc


def test_sampling_from_threads() -> None:
    dist = randomized(PAPER_32, "joint")
    results: list[np.ndarray[Any, Any]] = []

    def work() -> None:
        for _ in range(20):
            results.append(dist.sample(14))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(20):
        dist.entropy()
    for t in threads:
        t.join()
    assert len(results) == 80
    assert all(r.shape == (14, 32, 5) for r in results)


def test_self_check() -> None:
    message = self_check()
    assert "core ok" in message and "K(lambda=1/4) = 14" in message


def test_repr_and_properties() -> None:
    dist = Distribution(RAGGED, MIXED_MODES)
    assert dist.layout == tuple(tuple(d) for d in RAGGED)
    assert dist.num_decisions == 5 and dist.max_variables == 3
    assert repr(dist) == f"Distribution(5 decisions, 3 joint, {dist.num_params} logits)"
