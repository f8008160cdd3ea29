"""FP-NAS, Algorithm 1 of the paper, one iteration at a time.

Per iteration: entropy H -> K -> K samples -> validation log-likelihood (no grad) and
hinge cost of each -> m_omega = softmax_k(log-likelihood), m_alpha = m_omega - beta C/sum C
-> weight gradient accumulated over the samples on the training batch, skipping the passes
whose m_omega is below `skip_below` (`importance.trained_samples`) -> alpha gradient from
the core after the warm-up epochs -> SGD (cosine) on the weights, Adam on alpha.
During the warm-up, by default, every sample trains with weight 1/K and nothing is scored
(`warmup_training`), so the supernet learns the whole space before alpha moves.
At the end of epoch `convert_epoch` a mixed schedule turns FD into JD.

Fixed sampling (PARSEC) and FD-only / JD-only distributions are flags of the same loop;
the differentiable baseline (DNAS, FBNetV2) is another strategy behind the same seam
(`fpnas_dsl.search.strategy`).

Under torchrun the loop runs on every rank with a `Group` (`fpnas_dsl.search.distributed`)
that shards the batches, sums the log-likelihoods and averages the gradients; only rank 0
writes the run directory. Alone, the group is `Single` and changes nothing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl import cost
from fpnas_dsl.archfile import save_arch
from fpnas_dsl.data import (
    BatchPreparer,
    DataBundle,
    batches,
    eval_batches,
    split_halves,
    steps_per_epoch,
)
from fpnas_dsl.distribution import Distribution, Mode
from fpnas_dsl.errors import FpnasError, Interrupted, RunError
from fpnas_dsl.ir import Space, decode
from fpnas_dsl.nn import Supernet
from fpnas_dsl.pipeline import Augment, Loading, default_workers
from fpnas_dsl.precision import Precision
from fpnas_dsl.runfiles import ARCH_FILE, METRICS_FILE, truncate_metrics, write_json_atomic
from fpnas_dsl.search import probe
from fpnas_dsl.search.budget import Budget
from fpnas_dsl.search.checkpoint import (
    CHECKPOINT,
    load_checkpoint,
    save_checkpoint,
    space_digest,
)
from fpnas_dsl.search.config import SearchConfig
from fpnas_dsl.search.distributed import Group, Single, everywhere, state_digest
from fpnas_dsl.search.importance import importance_weights, trained_samples
from fpnas_dsl.search.scoring import supernet_counts
from fpnas_dsl.search.strategy import Strategy, make_strategy

#: Images per test batch when an architecture is scored (ranks split the test split
#: into these batches).
TEST_BATCH = 256
#: Training batches used to re-estimate batch-norm statistics of an architecture
#: before it is scored with the supernet's weights (the running statistics of a
#: supernet mix every sampled architecture).
BN_CALIBRATION_BATCHES = 8


@dataclass
class Position:
    """Where the search stands: the next iteration to run, and what has been done."""

    epoch: int = 1
    step: int = 0
    samples: int = 0
    wall: float = 0.0
    metrics_bytes: int = 0
    #: Samples whose training pass ran (the rest carried too little weight).
    trained: int = 0


class _StopRequest:
    """SIGINT sets a flag that the loop honours between iterations (never mid-update)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


class Search:
    """One search run in one run directory."""

    def __init__(
        self,
        config: SearchConfig,
        space: Space,
        data: DataBundle,
        run_dir: Path,
        group: Group | None = None,
    ) -> None:
        self.config = config
        self.space = space
        self.data = data
        self.run_dir = run_dir
        self.budget = Budget(config, space)
        self.group = group or Single()
        self.group.check_batch(config.batch_size)
        self.device = self.group.place(resolve_device(config.device))
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        # channels-last runs the depthwise/pointwise convolutions ~1.3x faster on the CPU.
        self.supernet = Supernet(space).to(self.device)
        self.supernet.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.supernet.parameters(),
            lr=config.weight_lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.omega_half, self.alpha_half = split_halves(data.train, config.seed)
        # This rank's part of every batch (all of it alone); the order is the whole half's.
        self.omega_part = self.group.shard(self.omega_half)
        self.alpha_part = self.group.shard(self.alpha_half)
        self.steps = steps_per_epoch(self.omega_half, config.batch_size)
        if config.steps_per_epoch:
            self.steps = min(self.steps, config.steps_per_epoch)
        if self.steps < 1:
            raise FpnasError(
                f"batch size {config.batch_size} is larger than half the training set "
                f"({len(self.omega_half)} images)"
            )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs * self.steps
        )
        mode: Mode = "joint" if config.distribution == "joint" else "factorized"
        self.dist = Distribution(space.layout.cardinalities, mode=mode, seed=config.seed)
        self.strategy: Strategy = make_strategy(self)
        self.dist = self.strategy.dist
        self.prepare = BatchPreparer(data, space.resolution, space.in_channels, self.device)
        self.precision = Precision(config.amp, self.device)
        # Image files are decoded by worker processes (two streams: omega and alpha);
        # in-memory data ignores this.
        workers = config.workers if config.workers is not None else default_workers(streams=2)
        data.set_loading(Loading(workers=workers, pin_memory=self.device.type == "cuda"))
        self.position = Position()
        #: Removes what a new run created (set by `prepare_search`): called when the run
        #: fails before its first checkpoint, so that no half-made run stays behind.
        self.discard: Callable[[], None] | None = None
        #: Seconds spent in the core, in forward/backward passes, and in everything else.
        self.times = {"core": 0.0, "fwd_bwd": 0.0, "other": 0.0}
        self._writer: Any = None

    # ----------------------------------------------------------------------------------
    # State

    def state(self) -> dict[str, Any]:
        return {
            "space_digest": space_digest(self.space),
            "epoch": self.position.epoch,
            "step": self.position.step,
            "samples": self.position.samples,
            "trained": self.position.trained,
            "wall": self.position.wall,
            "metrics_bytes": self.position.metrics_bytes,
            "supernet": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "distribution": self.dist.state_dict(),
            "strategy": self.strategy.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "grad_scaler": self.precision.state_dict(),
        }

    def restore(
        self,
        path: Path,
        log: Callable[[str], None] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Continue from the checkpoint at `path` (`state`: already read from it)."""
        if state is None:
            state = load_checkpoint(path, self.space)
        try:
            self.supernet.load_state_dict(state["supernet"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.dist.load_state_dict(state["distribution"])
            self.strategy.load_state_dict(state.get("strategy", {}))
            torch.set_rng_state(state["torch_rng"])
            self.precision.load_state_dict(state.get("grad_scaler"))
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise FpnasError(f"{path}: checkpoint does not fit this run ({exc})") from None
        self.position = Position(
            state["epoch"],
            state["step"],
            state["samples"],
            state["wall"],
            state.get("metrics_bytes", 0),
            state.get("trained", state["samples"]),
        )
        self._reschedule(log)

    def _reschedule(self, log: Callable[[str], None] | None) -> None:
        """Fit the restored cosine schedule to `config.epochs`, which `--resume --epochs`
        may have changed: the schedule is rebuilt for the new total number of steps and
        continues from the restored step (see `fpnas_dsl.search.run`)."""
        total = self.config.epochs * self.steps
        scheduler = self.scheduler
        old_total = int(scheduler.T_max)
        if total == old_total:
            return
        pos = self.position
        done = (pos.epoch - 1) * self.steps + pos.step
        if done > total:
            raise FpnasError(
                f"--epochs {self.config.epochs}: the run has done {done} steps already, more "
                f"than {self.config.epochs} epochs of {self.steps}"
            )
        scheduler.T_max = total
        eta_min = float(scheduler.eta_min)
        lrs = []
        for group, base in zip(self.optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = eta_min + (base - eta_min) * (1 + math.cos(math.pi * done / total)) / 2
            lrs.append(group["lr"])
        scheduler._last_lr = lrs  # what get_last_lr() reports until the next step
        if log is not None:
            old_epochs = old_total // max(self.steps, 1)
            log(
                f"fpnas search: {'extending' if total > old_total else 'shortening'} the "
                f"search from {old_epochs} to {self.config.epochs} epochs; the cosine "
                f"schedule of the weights is rebuilt for {total} steps and continues from "
                f"step {done} (learning rate {lrs[0]:.4g})"
            )

    # ----------------------------------------------------------------------------------
    # The loop

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Search to the last epoch and return the result; a run that fails (or is
        interrupted) before its first checkpoint removes what it created."""
        try:
            return self._run(progress)
        except BaseException:
            if self.discard is not None and not (self.run_dir / CHECKPOINT).exists():
                if self._writer is not None:
                    self._writer.close()
                self.discard()
            raise

    def _run(self, progress: bool) -> dict[str, Any]:
        from tqdm import tqdm

        main = self.group.main
        metrics_path = self.run_dir / METRICS_FILE
        if main:
            # A killed run may have logged iterations past its last checkpoint: drop them.
            truncate_metrics(metrics_path, self.position.metrics_bytes)
        total = self.config.epochs * self.steps
        done = (self.position.epoch - 1) * self.steps + self.position.step
        bar = tqdm(
            total=total,
            initial=done,
            disable=not (progress and main),
            unit="it",
            dynamic_ncols=True,
        )
        start_wall = time.perf_counter() - self.position.wall
        # Only rank 0 writes the metrics (the others write into the void).
        sink = metrics_path if main else Path(os.devnull)
        with open(sink, "a") as log, _StopRequest() as stop:
            while self.position.epoch <= self.config.epochs:
                epoch = self.position.epoch
                for x_train, y_train, x_val, y_val in self._epoch_batches(epoch):
                    # Every rank stops at the same iteration, whichever rank was asked to.
                    where = f"the stop check before epoch {epoch}, step {self.position.step + 1}"
                    if self.group.any(stop.requested, where):
                        self.position.wall = time.perf_counter() - start_wall
                        self._checkpoint(log)
                        bar.close()
                        raise everywhere(
                            Interrupted(
                                f"interrupted at epoch {epoch}, step {self.position.step}; "
                                f"resume with: fpnas search --resume {self.run_dir}"
                            )
                        )
                    record = self.iteration(epoch, x_train, y_train, x_val, y_val)
                    self.position.step += 1
                    self.position.wall = time.perf_counter() - start_wall
                    record["wall"] = round(self.position.wall, 3)
                    self._log(log, record)
                    bar.update(1)
                    bar.set_postfix(
                        epoch=epoch,
                        K=record["k"],
                        H=f"{record['entropy']:.1f}",
                        loss=f"{record['train_loss']:.3f}",
                        refresh=False,
                    )
                summary = self.end_of_epoch(epoch)
                self._log(log, summary)
                bar.set_postfix(
                    epoch=epoch,
                    H=f"{summary['entropy']:.1f}",
                    acc=f"{summary['val_acc']:.3f}",
                    refresh=True,
                )
                self.position.epoch += 1
                self.position.step = 0
                self.position.wall = time.perf_counter() - start_wall
                self._checkpoint(log)
        bar.close()
        return self.finish()

    def _epoch_batches(
        self, epoch: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        cfg = self.config
        start = self.position.step
        count = self.steps - start
        # Image folders: training augmentation (random-resized crop, flip) on the omega
        # batches only; alpha scores architectures on centre crops.
        train = batches(
            self.omega_part, cfg.batch_size, cfg.seed, epoch, start, count=count, augment=Augment()
        )
        val = batches(self.alpha_part, cfg.batch_size, cfg.seed + 1, epoch, start, count=count)
        for _, (xt, yt), (xv, yv) in zip(range(start, self.steps), train, val, strict=False):
            yield (self.prepare(xt), yt.to(self.device), self.prepare(xv), yv.to(self.device))

    def iteration(
        self,
        epoch: int,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
    ) -> dict[str, Any]:
        return self.strategy.iteration(epoch, x_train, y_train, x_val, y_val)

    def sampled_iteration(
        self,
        epoch: int,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
    ) -> dict[str, Any]:
        """The probabilistic strategies' iteration (`strategy.Sampled`)."""
        cfg = self.config
        t0 = time.perf_counter()
        entropy = self.dist.entropy()
        k = self.dist.sample_size(cfg.lam) if cfg.sampling == "adaptive" else cfg.k
        archs = self.dist.sample(k)
        t_core = time.perf_counter() - t0

        flops, costs = self.budget.costs(archs)

        t1 = time.perf_counter()
        self.supernet.train()
        log_likelihoods: np.ndarray | None = None
        if epoch <= cfg.warmup and cfg.warmup_training == "uniform":
            # Warm-up as single-path supernets train: every sample's pass weighs 1/K, so
            # the weights learn the whole space, not only each batch's most likely sample;
            # nothing is scored, since alpha does not move yet.
            m_omega = m_alpha = np.full(k, 1.0 / k)
        else:
            log_likelihoods = self._log_likelihoods(epoch, archs, x_val, y_val)
            m_omega, m_alpha = importance_weights(log_likelihoods, costs, cfg.beta)

        self.optimizer.zero_grad(set_to_none=True)
        trained, skipped_weight = trained_samples(m_omega, cfg.skip_below)
        values = []
        for i in trained:
            with self.precision.autocast():
                logits = self.supernet(x_train, archs[i])
            loss = F.cross_entropy(logits.float(), y_train)
            values.append(loss.detach().item())
            self.precision.backward(loss * float(m_omega[i]))
        # Once per iteration, after the K passes: the gradients and the losses, averaged
        # over the ranks (checked after, so that every rank stops at the same point).
        values = self.group.average_gradients(
            self.supernet.parameters(),
            values,
            f"the gradient all-reduce of epoch {epoch}, step {self.position.step + 1}",
        )
        train_loss = 0.0
        for i, value in zip(trained, values, strict=True):
            if not math.isfinite(value):
                self._non_finite(epoch, f"training loss of sample {i + 1}")
            train_loss += float(m_omega[i]) * value
        t2 = time.perf_counter()

        alpha_updated = epoch > cfg.warmup
        if alpha_updated:
            self.dist.step(archs, m_alpha, cfg.alpha_lr)
        t3 = time.perf_counter()
        self.precision.step(self.optimizer)
        self.scheduler.step()
        t4 = time.perf_counter()

        self.position.samples += k
        self.position.trained += len(trained)
        times = self.times
        times["core"] += t_core + (t3 - t2)
        times["fwd_bwd"] += t2 - t1
        times["other"] += (t1 - t0 - t_core) + (t4 - t3)
        return {
            "type": "iter",
            "epoch": epoch,
            "step": self.position.step,
            "k": k,
            "trained": len(trained),
            "skipped_weight": skipped_weight,
            "entropy": entropy,
            "train_loss": train_loss,
            "val_nll": None
            if log_likelihoods is None
            else float(-(m_omega * log_likelihoods).sum() / (len(y_val) * self.group.world)),
            "flops_mean": float(flops.mean()),
            "flops_min": int(flops.min()),
            "flops_max": int(flops.max()),
            "alpha_updated": alpha_updated,
            "samples": self.position.samples,
            "lr": self.scheduler.get_last_lr()[0],
            "t_core": t_core + (t3 - t2),
            "t_fwd_bwd": t2 - t1,
        }

    def _log_likelihoods(
        self, epoch: int, archs: np.ndarray, x_val: torch.Tensor, y_val: torch.Tensor
    ) -> np.ndarray:
        """log P(y_val | x_val, w, A_k) of each sample, summed over the batch (no grad)."""
        out = np.empty(len(archs), dtype=np.float64)
        with torch.no_grad():
            for i, arch in enumerate(archs):
                with self.precision.autocast():
                    logits = self.supernet(x_val, arch)
                # Summed in float32 whatever the autocast: thousands of nats per batch.
                out[i] = -float(F.cross_entropy(logits.float(), y_val, reduction="sum"))
        # One all-reduce: the sums over the whole batch, the same on every rank.
        out = self.group.sum(
            out, f"the log-likelihood sum of epoch {epoch}, step {self.position.step + 1}"
        )
        if not np.all(np.isfinite(out)):
            self._non_finite(epoch, "validation log-likelihood")
        return out

    def _non_finite(self, epoch: int, what: str) -> None:
        checkpoint = self.run_dir / CHECKPOINT
        kept = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint.exists()
            else "no epoch had finished, so nothing was kept"
        )
        raise everywhere(
            RunError(
                f"non-finite {what} at epoch {epoch}, step {self.position.step + 1}: "
                f"stopping; {kept} (try a lower --lr)"
            )
        )

    def end_of_epoch(self, epoch: int) -> dict[str, Any]:
        self.group.check_same(
            lambda: state_digest(self.dist.logits, self.supernet.parameters()),
            f"epoch {epoch}",
        )
        best = self.dist.argmax()
        flops = int(cost.flops(self.space, best[None])[0])
        accuracy = self.evaluate(best)
        summary: dict[str, Any] = {
            "type": "epoch",
            "epoch": epoch,
            "entropy": self.dist.entropy(),
            "k": self.dist.sample_size(self.config.lam)
            if self.config.sampling == "adaptive"
            else self.config.k,
            "expected_flops": probe.expectation(self.dist, lambda a: cost.flops(self.space, a)),
            "arch_flops": flops,
            "val_acc": accuracy,
            "samples": self.position.samples,
            "trained": self.position.trained,
            "alpha_params": self.dist.num_params,
            "modes": sorted(set(self.dist.modes)),
            "time_split": dict(self.times),
        }
        summary.update(self.strategy.epoch_summary(epoch))
        if self.config.distribution == "mixed" and epoch == self.config.convert_epoch:
            self.dist.to_joint()
            summary["converted_to_joint"] = True
            summary["entropy_after_conversion"] = self.dist.entropy()
        return summary

    def evaluate(
        self, arch: np.ndarray, calibrate: int = BN_CALIBRATION_BATCHES, whole: bool = False
    ) -> float:
        """Test accuracy of one architecture under the supernet's weights, with its own
        batch-norm statistics re-estimated on training batches first: on the first
        `eval_batches` test batches of `TEST_BATCH`, or on the `whole` test split."""
        calibration = (
            x for x, _ in batches(self.omega_half, self.config.batch_size, 7, 0, count=calibrate)
        )
        limit = None if whole else self.config.eval_batches
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

    def _checkpoint(self, log: TextIO) -> None:
        if not self.group.main:
            return
        log.flush()
        self.position.metrics_bytes = log.tell()
        save_checkpoint(self.run_dir, self.state())

    def _log(self, log: TextIO, record: dict[str, Any]) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()  # readable line by line while the run goes on (tail -f, tests)
        if not self.group.main:
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

    def _tensorboard(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def finish(self) -> dict[str, Any]:
        if self._writer is not None:
            self._writer.close()
        ranked = probe.top_k(self.dist, 5)
        entries = []
        for rank, (log_prob, idx) in enumerate(ranked, start=1):
            arch = decode(self.space, idx)
            flops = int(cost.flops(self.space, idx[None])[0])
            params = int(cost.params(self.space, idx[None])[0])
            entries.append((rank, log_prob, idx, arch, flops, params))
        rank, log_prob, idx, arch, flops, params = entries[0]
        accuracy = self.evaluate(idx, calibrate=BN_CALIBRATION_BATCHES * 2, whole=True)
        result = {
            "flops": flops,
            "params": params,
            "accuracy": accuracy,
            "log_prob": log_prob,
            **self.budget.report(idx, flops),
            "samples": self.position.samples,
            "trained": self.position.trained,
            "wall_seconds": round(self.position.wall, 1),
        }
        if not self.group.main:
            return result
        save_arch(self.run_dir / ARCH_FILE, self.space, arch, **result)
        top5 = [
            {"rank": r, "log_prob": lp, "flops": f, "params": p, **a.model_dump(mode="json")}
            for r, lp, _, a, f, p in entries
        ]
        write_json_atomic(self.run_dir / "top5.json", top5)
        return result


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
