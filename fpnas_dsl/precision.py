"""Mixed precision (`--amp bf16|fp16|off`) for the forward and backward passes.

Only the networks' passes run under autocast; what the search computes from them (the
log-likelihoods, the importance weights, alpha and its gradient) is cast to float32 and
float64 first, and the optimizers step float32 weights. fp16 needs loss scaling
(`torch.amp.GradScaler`) and a GPU; bf16 needs neither and also runs on the CPU (slowly
on most CPUs: it is there so that the code path can be tested without a GPU).
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

from fpnas_dsl.errors import FpnasError

Amp = Literal["off", "bf16", "fp16"]
AMP_CHOICES: tuple[Amp, ...] = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast, loss scaling and the optimizer step for one device and `--amp` mode."""

    def __init__(self, amp: str, device: torch.device) -> None:
        if amp not in AMP_CHOICES:
            raise FpnasError(f"--amp {amp!r}: allowed: {', '.join(AMP_CHOICES)}")
        if amp == "fp16" and device.type != "cuda":
            raise FpnasError(
                f"--amp fp16 needs a CUDA device (this run is on {device}); use --amp bf16 "
                "or --amp off on the CPU"
            )
        self.amp = amp
        self.device = device
        self.scaler: Any = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    @property
    def enabled(self) -> bool:
        return self.amp != "off"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.amp])

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()  # type: ignore[no-untyped-call]

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(), unscaling first (and skipping a step whose fp16 gradients
        overflowed, as GradScaler does)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
