"""The search loop: epochs of iterations, checkpoints, stop requests and records.

`Search` builds the supernet, its SGD and cosine schedule, the two halves of the training
data (omega trains the weights, alpha scores architectures) and the strategy
(`fpnas_dsl.search.strategy`), which owns each iteration and its architecture parameters
and sees the loop only through a `Context`. Per iteration the loop checks for a stop
request and a due checkpoint (every rank agreeing), hands the batches to the strategy and
records what it returns; per epoch it scores the strategy's most probable architecture
(`fpnas_dsl.search.evaluation`), records the summary and writes a checkpoint.

A stop request (Ctrl-C or SIGTERM, `fpnas_dsl.stopping.StopRequest`) is honoured at the
next iteration boundary on every rank: the run writes its checkpoint and ends with
`Interrupted` (128 + the signal). `checkpoint_every` bounds what a SIGKILL loses.
Resuming from any of these checkpoints continues bit for bit the run that never stopped.

Under torchrun the loop runs on every rank with a `Group` (`fpnas_dsl.search.distributed`)
that shards the batches, sums the log-likelihoods and averages the gradients; only rank 0
writes the run directory. Alone, the group is `Single` and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import torch

from fpnas_dsl import cost
from fpnas_dsl.data import BatchPreparer, DataBundle, batches, split_halves, steps_per_epoch
from fpnas_dsl.distribution import Distribution
from fpnas_dsl.errors import FpnasError, Interrupted, RunError
from fpnas_dsl.ir import Space
from fpnas_dsl.nn import Supernet
from fpnas_dsl.pipeline import Augment, Loading, default_workers
from fpnas_dsl.precision import Precision
from fpnas_dsl.search.budget import Budget
from fpnas_dsl.search.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, space_digest
from fpnas_dsl.search.config import SearchConfig
from fpnas_dsl.search.context import Context, Position
from fpnas_dsl.search.device import resolve_device
from fpnas_dsl.search.distributed import Group, Single, everywhere, state_digest
from fpnas_dsl.search.evaluation import Evaluator
from fpnas_dsl.search.records import Progress, Records
from fpnas_dsl.search.schedule import refit_to_epochs
from fpnas_dsl.search.strategy import Strategy, make_strategy
from fpnas_dsl.stopping import CheckpointClock, StopRequest

__all__ = ["Search", "resolve_device"]

Batches = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


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
        self.precision = Precision(config.amp, self.device)
        budget = Budget(config, space)
        self.context = Context(
            config, space, self.supernet, self.optimizer, self.scheduler, self.precision,
            self.group, budget, self._non_finite,
        )  # fmt: skip
        self.strategy: Strategy = make_strategy(self.context)
        self.prepare = BatchPreparer(data, space.resolution, space.in_channels, self.device)
        self.evaluator = Evaluator(
            space, data, self.omega_half, self.supernet, self.prepare, self.group,
            config.batch_size, config.eval_batches,
        )  # fmt: skip
        # Image files are decoded by worker processes (two streams: omega and alpha);
        # in-memory data ignores this.
        workers = config.workers if config.workers is not None else default_workers(streams=2)
        data.set_loading(Loading(workers=workers, pin_memory=self.device.type == "cuda"))
        #: Removes what a new run created (set by `prepare_search`): called when the run
        #: fails before its first checkpoint, so that no half-made run stays behind.
        self.discard: Callable[[], None] | None = None

    @property
    def position(self) -> Position:
        return self.context.position

    @property
    def dist(self) -> Distribution:
        """The strategy's architecture distribution."""
        return self.strategy.dist

    # ----------------------------------------------------------------------------------
    # State

    def state(self) -> dict[str, Any]:
        pos = self.position
        return {
            "space_digest": space_digest(self.space),
            "epoch": pos.epoch,
            "step": pos.step,
            "samples": pos.samples,
            "trained": pos.trained,
            "wall": pos.wall,
            "metrics_bytes": pos.metrics_bytes,
            "supernet": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **self.strategy.state_dict(),
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
            self.strategy.load_state_dict(state)
            torch.set_rng_state(state["torch_rng"])
            self.precision.load_state_dict(state.get("grad_scaler"))
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise FpnasError(f"{path}: checkpoint does not fit this run ({exc})") from None
        self.context.position = Position(
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
        may have changed (see `fpnas_dsl.search.run`)."""
        done = (self.position.epoch - 1) * self.steps + self.position.step
        said = refit_to_epochs(self.scheduler, self.optimizer, self.config.epochs, self.steps, done)
        if said is not None and log is not None:
            log(said)

    # ----------------------------------------------------------------------------------
    # The loop

    def run(self, progress: bool = True) -> dict[str, Any]:
        """Search to the last epoch and return the result; a run that fails (or is
        interrupted) before its first checkpoint removes what it created."""
        try:
            return self._run(progress)
        except BaseException:
            if self.discard is not None and not (self.run_dir / CHECKPOINT).exists():
                self.discard()
            raise

    def _run(self, progress: bool) -> dict[str, Any]:
        pos, cfg = self.position, self.config
        records = Records(self.run_dir, self.group.main, self.steps, pos.metrics_bytes)
        done = (pos.epoch - 1) * self.steps + pos.step
        bar = Progress(cfg.epochs * self.steps, done, progress and self.group.main)
        start_wall = time.perf_counter() - pos.wall
        clock = CheckpointClock(cfg.checkpoint_every)
        try:
            with StopRequest() as stop:
                while pos.epoch <= cfg.epochs:
                    epoch = pos.epoch
                    for x_train, y_train, x_val, y_val in self._epoch_batches(epoch):
                        # Every rank stops (or checkpoints) at the same iteration.
                        where = f"the stop check before {pos.where(epoch)}"
                        stopping, due = self.group.any_of([stop.requested, clock.due()], where)
                        if stopping or due:
                            pos.wall = time.perf_counter() - start_wall
                            self._checkpoint(records, clock)
                        if stopping:
                            raise everywhere(self._stopped(stop, epoch))
                        record = self.iteration(epoch, x_train, y_train, x_val, y_val)
                        pos.step += 1
                        pos.wall = time.perf_counter() - start_wall
                        record["wall"] = round(pos.wall, 3)
                        records.write(record)
                        bar.iteration(record)
                    summary = self.end_of_epoch(epoch)
                    records.write(summary)
                    bar.epoch(summary)
                    pos.epoch += 1
                    pos.step = 0
                    pos.wall = time.perf_counter() - start_wall
                    self._checkpoint(records, clock)
        finally:
            bar.close()
            records.close()
        return self.finish()

    def _stopped(self, stop: StopRequest, epoch: int) -> Interrupted:
        """Where a stop request ended the run, and how to go on."""
        return Interrupted(
            f"interrupted at epoch {epoch}, step {self.position.step} by {stop.signal_name} "
            f"(checkpoint written); resume with: fpnas search --resume {self.run_dir}",
            exit_code=stop.exit_code,
        )

    def _epoch_batches(self, epoch: int) -> Iterator[Batches]:
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
        """One iteration of the strategy; its metrics record."""
        return self.strategy.iteration(epoch, x_train, y_train, x_val, y_val)

    def _non_finite(self, epoch: int, what: str) -> NoReturn:
        checkpoint = self.run_dir / CHECKPOINT
        kept = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint.exists()
            else "no epoch had finished, so nothing was kept"
        )
        raise everywhere(
            RunError(
                f"non-finite {what} at {self.position.where(epoch)}: stopping; {kept} "
                "(try a lower --lr)"
            )
        )

    def end_of_epoch(self, epoch: int) -> dict[str, Any]:
        dist = self.strategy.dist
        self.group.check_same(
            lambda: state_digest(dist.logits, self.supernet.parameters()), f"epoch {epoch}"
        )
        best = dist.argmax()
        flops = int(cost.flops(self.space, best[None])[0])
        accuracy = self.evaluator.accuracy(best)
        return {
            "type": "epoch",
            "epoch": epoch,
            "arch_flops": flops,
            "val_acc": accuracy,
            "samples": self.position.samples,
            "trained": self.position.trained,
            "time_split": dict(self.context.times),
            **self.strategy.epoch_summary(epoch),
        }

    def _checkpoint(self, records: Records, clock: CheckpointClock) -> None:
        clock.reset()
        if not self.group.main:
            return
        self.position.metrics_bytes = records.written()
        save_checkpoint(self.run_dir, self.state())

    def finish(self) -> dict[str, Any]:
        return self.evaluator.finish(self.dist, self.context.budget, self.position, self.run_dir)
