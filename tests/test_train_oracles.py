"""`fpnas train`'s recipe parts against well-kept implementations (test-only oracles).

- `RMSpropTF` against timm's `RMSpropTF` (lr inside the momentum, as TensorFlow): the
  two write the squared-gradient average differently (rho ms + (1 - rho) g^2 here,
  ms + (1 - rho) (g^2 - ms) in timm), so they agree within rounding: relative 1e-12 in
  float64, 1e-5 in float32, over 40 steps of the same gradients.
- `EMA.update` against timm's `ModelEmaV3.apply_update_` given the same decay (timm's
  warm-up differs from TensorFlow's, which `EMA` keeps): bitwise.
- `learning_rate` against torch's `LambdaLR` stepped once per step: within 1 ulp.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fpnas_dsl.train import EMA, RMSpropTF, TrainConfig, learning_rate

timm_rmsprop = pytest.importorskip("timm.optim.rmsprop_tf")
timm_ema = pytest.importorskip("timm.utils.model_ema")


def _params(dtype: torch.dtype, seed: int) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(8, 4, 3, 3), (16,), (5, 7)]
    return [nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_rmsprop_tf_matches_timm(dtype: torch.dtype, rtol: float) -> None:
    ours, theirs = _params(dtype, 0), _params(dtype, 0)
    settings = {"lr": 0.016, "momentum": 0.9, "eps": 1e-3}

    def groups(params: list[nn.Parameter]) -> list[dict[str, object]]:
        # As `make_optimizer`: L2 weight decay on the weights, none on the 1-d tensors.
        return [
            {"params": [params[0], params[2]], "weight_decay": 1e-5},
            {"params": [params[1]], "weight_decay": 0.0},
        ]

    mine = RMSpropTF(groups(ours), rho=0.9, **settings)
    timm = timm_rmsprop.RMSpropTF(
        groups(theirs), alpha=0.9, lr_in_momentum=True, decoupled_decay=False, **settings
    )
    gen = torch.Generator().manual_seed(1)
    for step in range(40):
        for a, b in zip(ours, theirs, strict=True):
            grad = torch.randn(a.shape, generator=gen, dtype=dtype) * (0.1 + step % 3)
            a.grad, b.grad = grad.clone(), grad.clone()
        lr = 0.016 * (step + 1) / 40  # a warm-up, set per step as the training loop does
        for opt in (mine, timm):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * 1e-2)
        for key in ("square_avg", "momentum_buffer"):
            torch.testing.assert_close(
                mine.state[a][key], timm.state[b][key], rtol=rtol, atol=rtol * 1e-2
            )


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))


@pytest.mark.parametrize("foreach", [True, False])
def test_ema_matches_timm_model_ema_v3_bitwise(foreach: bool) -> None:
    model = _net()
    decay = 0.99
    mine = EMA(model, decay)
    theirs = timm_ema.ModelEmaV3(model, decay=decay, foreach=foreach)
    for _ in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        model.train()
        model(torch.randn(2, 3, 6, 6))  # moves the batch-norm statistics and its counter
        mine.update()
        # The decay of update t under TensorFlow's warm-up, which `EMA` applies.
        t = mine.updates
        theirs.apply_update_(model, min(decay, (1 + t) / (10 + t)))
    got, want = mine.module.state_dict(), theirs.module.state_dict()
    assert list(got) == list(want)
    for key in got:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key


def _oracle_multiplier(cfg: TrainConfig, steps: int):  # type: ignore[no-untyped-def]
    """The recipe's multiplier of the initial rate at global step k, for `LambdaLR`."""
    assert cfg.lr_decay is not None

    def multiplier(k: int) -> float:
        progress = k // steps + (k % steps) / steps  # epochs, as the training loop counts
        if progress < cfg.warmup_epochs:
            return progress / cfg.warmup_epochs
        if cfg.schedule == "cosine":
            done = min((progress - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs), 1.0)
            return 0.5 * (1 + math.cos(math.pi * done))
        return cfg.lr_decay ** math.floor(progress)

    return multiplier


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(epochs=12, batch_size=256, warmup_epochs=1.0),
        TrainConfig(epochs=12, batch_size=96, warmup_epochs=2.5, schedule="cosine"),
        TrainConfig(epochs=7, batch_size=4096, warmup_epochs=0, lr_decay=0.9875),
    ],
    ids=["exp", "cosine", "literal-decay"],
)
def test_learning_rate_matches_lambda_lr_within_one_ulp(cfg: TrainConfig) -> None:
    steps = 37
    cfg = cfg.resolved(steps_per_epoch=steps, resolution=28)
    assert cfg.lr is not None
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, _oracle_multiplier(cfg, steps))
    worst = 0.0
    for k in range(cfg.epochs * steps):
        want = opt.param_groups[0]["lr"]
        got = learning_rate(cfg, k // steps + (k % steps) / steps)
        if want:
            worst = max(worst, abs(got - want) / math.ulp(want))
        else:
            assert got == 0.0
        opt.step()
        schedule.step()
    assert worst <= 1.0
