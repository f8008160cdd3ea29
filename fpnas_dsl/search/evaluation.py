"""What a search reports of its architectures: the supernet's test accuracy of one
architecture (each epoch's argmax, and the winner on the whole test split), and the
result at the end: arch.json and top5.json."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpnas_dsl import cost
from fpnas_dsl.archfile import save_arch
from fpnas_dsl.data import DataBundle, ImageSet, batches, eval_batches
from fpnas_dsl.distribution import Distribution
from fpnas_dsl.ir import Space, decode
from fpnas_dsl.nn import Supernet
from fpnas_dsl.runfiles import ARCH_FILE, write_json_atomic
from fpnas_dsl.search import probe
from fpnas_dsl.search.budget import Budget
from fpnas_dsl.search.context import Position
from fpnas_dsl.search.distributed import Group
from fpnas_dsl.search.scoring import supernet_counts

__all__ = ["BN_CALIBRATION_BATCHES", "TEST_BATCH", "Evaluator"]

#: Images per test batch when an architecture is scored (ranks split the test split
#: into these batches).
TEST_BATCH = 256
#: Training batches used to re-estimate batch-norm statistics of an architecture
#: before it is scored with the supernet's weights (the running statistics of a
#: supernet mix every sampled architecture).
BN_CALIBRATION_BATCHES = 8


class Evaluator:
    """Scores architectures under a supernet's weights, on every rank's share."""

    def __init__(
        self,
        space: Space,
        data: DataBundle,
        calibration: ImageSet,
        supernet: Supernet,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        group: Group,
        batch_size: int,
        eval_batches: int,
    ) -> None:
        self.space = space
        self.data = data
        self.calibration = calibration
        self.supernet = supernet
        self.prepare = prepare
        self.group = group
        self.batch_size = batch_size
        self.eval_batches = eval_batches

    def accuracy(
        self, arch: np.ndarray, calibrate: int = BN_CALIBRATION_BATCHES, whole: bool = False
    ) -> float:
        """Test accuracy of one architecture under the supernet's weights, with its own
        batch-norm statistics re-estimated on training batches first: on the first
        `eval_batches` test batches of `TEST_BATCH`, or on the `whole` test split."""
        calibration = (
            x for x, _ in batches(self.calibration, self.batch_size, 7, 0, count=calibrate)
        )
        limit = None if whole else self.eval_batches
        test: Iterable[tuple[torch.Tensor, torch.Tensor]]
        test = eval_batches(self.data.test, TEST_BATCH, limit)
        if self.group.world > 1:
            # Every rank calibrates on the same batches and scores its share of the test
            # batches (loaded lazily, so a rank reads only its own).
            count = -(-len(self.data.test) // TEST_BATCH)
            mine = self.group.part(count if limit is None else min(limit, count))
            test = (self.data.test.batch(self._test_indices(b)) for b in mine)
        correct, seen = supernet_counts(
            self.supernet, decode(self.space, arch), calibration, test, self.prepare
        )
        totals = self.group.sum(np.array([correct, seen], dtype=np.float64), "the test scores")
        return float(totals[0]) / max(float(totals[1]), 1.0)

    def _test_indices(self, batch: int) -> torch.Tensor:
        start = batch * TEST_BATCH
        return torch.arange(start, min(start + TEST_BATCH, len(self.data.test)))

    def finish(
        self, dist: Distribution, budget: Budget, position: Position, run_dir: Path
    ) -> dict[str, Any]:
        """The result: the most probable architecture scored on the whole test split;
        rank 0 writes arch.json and top5.json (the five most probable)."""
        ranked = probe.top_k(dist, 5)
        entries = []
        for rank, (log_prob, idx) in enumerate(ranked, start=1):
            arch = decode(self.space, idx)
            flops = int(cost.flops(self.space, idx[None])[0])
            params = int(cost.params(self.space, idx[None])[0])
            entries.append((rank, log_prob, idx, arch, flops, params))
        rank, log_prob, idx, arch, flops, params = entries[0]
        accuracy = self.accuracy(idx, calibrate=BN_CALIBRATION_BATCHES * 2, whole=True)
        result = {
            "flops": flops,
            "params": params,
            "accuracy": accuracy,
            "log_prob": log_prob,
            **budget.report(idx, flops),
            "samples": position.samples,
            "trained": position.trained,
            "wall_seconds": round(position.wall, 1),
        }
        if not self.group.main:
            return result
        save_arch(run_dir / ARCH_FILE, self.space, arch, **result)
        top5 = [
            {"rank": r, "log_prob": lp, "flops": f, "params": p, **a.model_dump(mode="json")}
            for r, lp, _, a, f, p in entries
        ]
        write_json_atomic(run_dir / "top5.json", top5)
        return result
