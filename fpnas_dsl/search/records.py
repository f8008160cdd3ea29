"""A search's records: metrics.jsonl (one JSON object a line), TensorBoard scalars and
the progress bar.

Only rank 0 writes them; the other ranks write into the void. On resume the file is cut
back to what the checkpoint had seen (a killed run may have logged iterations past its
last checkpoint)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fpnas_dsl.runfiles import METRICS_FILE, truncate_metrics

__all__ = ["METRICS", "Progress", "Records"]

METRICS = METRICS_FILE


class Records:
    """metrics.jsonl and the TensorBoard events of one run directory."""

    def __init__(self, run_dir: Path, main: bool, steps: int, keep_bytes: int) -> None:
        self.run_dir = run_dir
        self.main = main
        self.steps = steps
        path = run_dir / METRICS
        if main:
            # A killed run may have logged iterations past its last checkpoint: drop them.
            truncate_metrics(path, keep_bytes)
        self._file = open(path if main else Path(os.devnull), "a")  # noqa: SIM115
        self._writer: Any = None

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # readable line by line while the run goes on (tail -f, tests)
        if not self.main:
            return
        writer = self._tensorboard()
        step = (record["epoch"] - 1) * self.steps + record.get("step", self.steps)
        for key, value in record.items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and key not in ("epoch", "step", "type")
            ):
                writer.add_scalar(f"{record['type']}/{key}", value, step)

    def written(self) -> int:
        """Bytes of metrics.jsonl so far (what a checkpoint keeps on resume), synced: the
        checkpoint that names this length is written after it."""
        self._file.flush()
        if self.main:
            os.fsync(self._file.fileno())
        return self._file.tell()

    def _tensorboard(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._file.close()


class Progress:
    """The progress bar of rank 0 (tqdm), iteration by iteration."""

    def __init__(self, total: int, done: int, show: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, disable=not show, unit="it", dynamic_ncols=True)

    def iteration(self, record: dict[str, Any]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(
            epoch=record["epoch"],
            K=record["k"],
            H=f"{record['entropy']:.1f}",
            loss=f"{record['train_loss']:.3f}",
            refresh=False,
        )

    def epoch(self, summary: dict[str, Any]) -> None:
        self.bar.set_postfix(
            epoch=summary["epoch"],
            H=f"{summary['entropy']:.1f}",
            acc=f"{summary['val_acc']:.3f}",
            refresh=True,
        )

    def close(self) -> None:
        self.bar.close()
