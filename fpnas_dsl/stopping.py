"""Stop requests and time-based checkpoints: what a long run does when it is preempted.

On a shared cluster a job is stopped with SIGTERM and, after a grace period, SIGKILL
(SLURM, Kubernetes; torchrun forwards SIGTERM to its workers). A run therefore treats
SIGTERM as it treats Ctrl-C: `StopRequest` sets a flag that the run honours at its next
iteration boundary (never mid-update), where it writes a checkpoint and exits with
128 + the signal's number (130 for SIGINT, 143 for SIGTERM). A second Ctrl-C stops at
once. What SIGKILL would lose is bounded by `CheckpointClock`: a checkpoint whenever
`--checkpoint-every` has passed since the last one.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "CheckpointClock",
    "StopRequest",
    "describe_duration",
    "parse_duration",
]

#: Seconds between time-based checkpoints unless `--checkpoint-every` says otherwise.
DEFAULT_CHECKPOINT_EVERY = 300.0

_SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class StopRequest:
    """SIGINT and SIGTERM set `signum`; the run checks `requested` between iterations.

    Handlers are installed only from the main thread (Python allows no other); a run
    started in another thread, such as a notebook's worker, keeps the default handlers.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + (self.signum or signal.SIGINT)

    @property
    def signal_name(self) -> str:
        return _SIGNAL_NAMES.get(self.signum or signal.SIGINT, f"signal {self.signum}")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.signum is None or signum == signal.SIGINT:
            self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


class CheckpointClock:
    """Says when `every` seconds have passed since the last checkpoint (never if None)."""

    def __init__(self, every: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._last = clock()

    def due(self) -> bool:
        return self.every is not None and self._clock() - self._last >= self.every

    def reset(self) -> None:
        """A checkpoint was just written (at an epoch end, on a stop, or because due)."""
        self._last = self._clock()


_DURATION = re.compile(r"(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|m|min|h)?")
_UNIT_SECONDS = {None: 1.0, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds of a duration such as `90`, `90s`, `5m`, `1.5h`; None for `off` or 0.

    ValueError, with what is allowed, for anything else (argparse shows it).
    """
    cleaned = text.strip().lower()
    if cleaned in ("off", "never", "none"):
        return None
    match = _DURATION.fullmatch(cleaned)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; write a number with an optional unit "
            f"(ms, s, m, h), for example 90s, 5m or 1h, or off"
        )
    seconds = float(match["value"]) * _UNIT_SECONDS[match["unit"]]
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a finite duration")
    return seconds if seconds > 0 else None


def describe_duration(seconds: float | None) -> str:
    """`5m`, `90s`, `1.5h` or `off`, as a user would type it back."""
    if seconds is None:
        return "off"
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and (seconds / size) * 10 == int((seconds / size) * 10):
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
