"""The device a search or a training runs on, from `--device`."""

from __future__ import annotations

import torch

from fpnas_dsl.errors import FpnasError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """cpu, cuda or cuda:N as a torch device; FpnasError for anything else, and for a GPU
    that is not there."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise FpnasError(f"--device {name!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise FpnasError(f"--device {name!r}: not supported; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FpnasError(
                f"--device {name}: no CUDA GPU is available here (torch.cuda.is_available() "
                f"is False); use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise FpnasError(
                f"--device {name}: there {'is' if count == 1 else 'are'} {count} GPU"
                f"{'' if count == 1 else 's'} here (cuda:0 to cuda:{count - 1})"
            )
    return device
