"""The architecture distribution P(A | alpha): a thin typed face over the C++ core.

A *layout* is a list of decisions, each a list of variable cardinalities (every one >= 1).
Per decision the mode is

- ``"factorized"`` (FD): one categorical per variable, ``sum |D_m|`` logits, or
- ``"joint"`` (JD): one categorical over the product, ``prod |D_m|`` logits in row-major
  order (the first variable varies slowest, the last fastest).

All logits (alpha) live in one contiguous float64 buffer owned by the core, decision after
decision and, within a factorized decision, variable after variable. ``Distribution.logits``
is a writable numpy view of that buffer: the single source of truth for alpha. ``to_joint``
and ``load_state_dict`` with different modes replace the buffer; views taken before stay
valid memory but are detached from alpha, so read ``logits`` again afterwards.

Architectures are int64 arrays ``[K, decisions, max_variables]`` holding each variable's
choice index, whatever the mode; slots past a decision's last variable are 0.

Limits (``ValueError`` beyond them): one categorical -- a factorized variable or a whole joint
decision -- has at most ``MAX_CATEGORICAL`` = 2**22 outcomes, so a joint decision whose
product of cardinalities exceeds 2**22 is refused; a layout has at most ``MAX_PARAMS`` = 2**23
logits; a sample batch has at most 2**28 elements.

Errors: a wrong dtype is a ``TypeError``; a wrong shape, rank, memory order, an index out of
range, a nonzero padded slot, a cardinality below 1, K below 1, non-finite weights and so on
are ``ValueError`` naming what was expected.

Randomness comes from the core's own generator (xoshiro256** seeded by splitmix64) turned into
choices by inverse CDF, with CDFs computed by the core's own exp in a fixed order, so a seed
gives the same samples on every platform; one uniform is drawn per categorical, sample by
sample, so ``sample(a)`` then ``sample(b)`` equals ``sample(a + b)``.

Sampling runs without the GIL; calls on one Distribution from several threads are
serialised by a lock in the core, but writes through a ``logits`` view are not.

Adam (betas 0.9/0.999, eps 1e-8, bias-corrected, as ``torch.optim.Adam``) keeps one step
count per decision: a decision converted by ``to_joint`` restarts with zero moments and step
count, as a new parameter would.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import numpy.typing as npt

from fpnas_dsl.native import load_core

if TYPE_CHECKING:
    from fpnas_dsl import _core
else:  # found even when a source tree without the build shadows the installed package
    _core = load_core()

Mode = Literal["factorized", "joint"]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MAX_CATEGORICAL: int = _core.MAX_CATEGORICAL
MAX_PARAMS: int = _core.MAX_PARAMS

_STATE_ARRAYS = ("logits", "adam_m", "adam_v", "adam_step", "rng")


def _array(x: npt.ArrayLike) -> np.ndarray[Any, Any]:
    """Passes numpy arrays through untouched (no copy); converts lists and the like."""
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def _seed(seed: int) -> int:
    seed = operator.index(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


class Distribution:
    """P(A | alpha) over a layout of decisions; see the module docstring."""

    def __init__(
        self,
        layout: Sequence[Sequence[int]],
        mode: Mode | Sequence[Mode] = "factorized",
        seed: int = 0,
    ) -> None:
        cards = [[operator.index(c) for c in decision] for decision in layout]
        modes = [mode] * len(cards) if isinstance(mode, str) else list(mode)
        self._core = _core.Distribution(cards, modes, _seed(seed))

    def __repr__(self) -> str:
        joint = sum(m == "joint" for m in self.modes)
        return (
            f"Distribution({self.num_decisions} decisions, {joint} joint, {self.num_params} logits)"
        )

    @property
    def layout(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(d) for d in self._core.layout)

    @property
    def modes(self) -> tuple[Mode, ...]:
        return tuple(cast(Mode, m) for m in self._core.modes)

    @property
    def num_decisions(self) -> int:
        return self._core.num_decisions

    @property
    def max_variables(self) -> int:
        return self._core.max_variables

    @property
    def num_params(self) -> int:
        return self._core.num_params

    @property
    def logits(self) -> FloatArray:
        """Writable view of alpha (no copy); re-read it after ``to_joint``."""
        return self._core.logits

    def entropy(self) -> float:
        """Total entropy in nats (the sum over the independent decisions)."""
        return self._core.entropy()

    def entropy_per_decision(self) -> FloatArray:
        return self._core.entropy_per_decision()

    def sample_size(self, lam: float) -> int:
        """The adaptive sample size K = max(1, floor(lam * H))."""
        return self._core.sample_size(float(lam))

    def sample(self, k: int) -> IntArray:
        """K architectures ``[k, decisions, max_variables]``, drawn without the GIL."""
        return self._core.sample(operator.index(k))

    def log_prob(self, samples: npt.ArrayLike) -> FloatArray:
        """log P(A_k | alpha) for each architecture: ``[K]``."""
        return self._core.log_prob(_array(samples))

    def grad(self, samples: npt.ArrayLike, weights: npt.ArrayLike) -> FloatArray:
        """``sum_k w_k * d(-log P(A_k | alpha)) / d alpha``: ``[num_params]``, closed form."""
        return self._core.grad(_array(samples), _array(weights))

    def adam_step(self, grad: npt.ArrayLike, lr: float) -> None:
        """One Adam step on alpha with gradient ``grad`` ``[num_params]``."""
        self._core.adam_step(_array(grad), float(lr))

    def step(self, samples: npt.ArrayLike, weights: npt.ArrayLike, lr: float) -> None:
        """``adam_step(grad(samples, weights), lr)`` in one call."""
        self._core.step(_array(samples), _array(weights), float(lr))

    def to_joint(self, decisions: Iterable[int] | None = None) -> None:
        """Converts decisions (all by default) to joint mode, keeping every probability."""
        if decisions is None:
            self._core.to_joint_all()
        else:
            self._core.to_joint([operator.index(d) for d in decisions])

    def argmax(self) -> IntArray:
        """The most probable architecture ``[decisions, max_variables]`` (ties: lowest)."""
        return self._core.argmax()

    def set_seed(self, seed: int) -> None:
        self._core.set_seed(_seed(seed))

    def state_dict(self) -> dict[str, Any]:
        """Copies of everything needed to resume exactly: picklable, ``torch.save``-able."""
        state: dict[str, Any] = {"layout": [list(d) for d in self.layout]}
        state.update(self._core.get_state())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a ``state_dict`` saved from a distribution with the same layout."""
        missing = [key for key in ("layout", "modes", *_STATE_ARRAYS) if key not in state]
        if missing:
            raise ValueError(f"state is missing {', '.join(missing)}")
        layout = [[int(c) for c in d] for d in state["layout"]]
        if layout != [list(d) for d in self.layout]:
            raise ValueError(f"state is for layout {layout}, not {[list(d) for d in self.layout]}")
        arrays = [_array(state[key]) for key in _STATE_ARRAYS]
        self._core.set_state(list(state["modes"]), *arrays)


def fbnetv2_f_layout() -> list[list[int]]:
    """A layout shaped like the paper's FBNetV2-F space: ln(count) = 56.2537 nats."""
    return [[3, 2, 2, 2]] + [[3, 2, 2, 6, c] for c in (3, 3, 4, 4, 5, 5, 6, 10, 10)]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(f"core self-check failed: {message}")


def self_check() -> str:
    """Exercises the core on the FBNetV2-F-like layout; raises RuntimeError on failure."""
    layout = fbnetv2_f_layout()
    dist = Distribution(layout, "factorized", seed=0)
    ln_count = math.fsum(math.log(c) for decision in layout for c in decision)
    h_uniform = dist.entropy()
    _require(abs(h_uniform - ln_count) < 1e-9, f"uniform entropy {h_uniform} != {ln_count}")
    k = dist.sample_size(0.25)
    _require(k == 14, f"K at lambda 1/4 is {k}, expected 14")

    dist.logits[:] = np.random.default_rng(0).normal(size=dist.num_params)
    samples = dist.sample(1000)
    padded = [list(d) + [1] * (dist.max_variables - len(d)) for d in layout]
    _require(bool(np.all((samples >= 0) & (samples < np.array(padded)))), "sample out of range")
    log_p, entropy, fd_params = dist.log_prob(samples), dist.entropy(), dist.num_params
    dist.to_joint()
    d_log_p = float(np.max(np.abs(dist.log_prob(samples) - log_p)))
    d_entropy = abs(dist.entropy() - entropy)
    _require(d_log_p < 1e-12 and d_entropy < 1e-12, f"FD->JD changed log P by {d_log_p:.3g}")
    return (
        f"core ok: {len(layout)} decisions, {fd_params} logits factorized / "
        f"{dist.num_params} joint; uniform H = {h_uniform:.4f} nats = ln(count), "
        f"K(lambda=1/4) = {k}; FD->JD max |d log P| = {d_log_p:.1e}, |dH| = {d_entropy:.1e}"
    )
