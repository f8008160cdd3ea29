"""One search across several processes (`torchrun`): what the loop asks of the other ranks.

The loop talks to a `Group`. `Single` is one process and does nothing; `TorchGroup` does
the collectives with `torch.distributed` (gloo for CPU tensors, NCCL for CUDA tensors).
`join` picks one from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_*).

What makes N processes one search:

- Every rank builds the supernet and the distribution from the same seed, then takes rank
  0's state (its checkpoint, when resuming), so every rank draws the same K architectures
  from the same core generator state.
- `--batch-size` is the global batch: the batch order stays a function of (seed, epoch)
  and each rank takes its contiguous 1/N of every batch (`Shard`). Steps per epoch, the
  learning-rate schedule and the checkpoint's position do not depend on N, which is why
  a checkpoint resumes with any number of processes.
- The K validation log-likelihoods (sums over each rank's part of the batch) are summed
  by one all-reduce before the importance weights, so m_omega, m_alpha and alpha come
  out identical on every rank and alpha is never broadcast; every epoch the ranks compare
  a digest of alpha and the weights (`check_same`) and stop if they ever disagree.
- The omega gradients are averaged by one explicit all-reduce per iteration, after the
  K samples' training passes have accumulated them, not by DDP. DDP reduces at every
  backward (K times per iteration unless `no_sync`), must walk the graph to find the
  parameters a sample did not use (they differ per sample), and gives those parameters
  a zero gradient, so that momentum and weight decay would move weights that one process
  leaves alone (SGD skips a parameter whose grad is None). The samples are the same on
  every rank, so the set of parameters with a gradient is too.
- Batch norm is per rank (as DDP without SyncBatchNorm): each rank normalises with the
  statistics of its part of the batch. Synced statistics would take one collective per
  batch-norm layer per forward (K validation forwards and the training passes); their
  effect is measured in BENCHMARKS.md. Scoring re-estimates an architecture's statistics
  on the same calibration batches on every rank, so scores do not depend on N.

A rank that dies or hangs: every collective has the timeout given to `join`; before each
one a rank writes which collective it reached into torchrun's store, so a rank whose
collective fails names the ranks that never reached it (`_diagnose`). torchrun then ends
the other ranks.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from fpnas_dsl.data import ImageSet
from fpnas_dsl.errors import FpnasError, RunError, clip

__all__ = [
    "DEFAULT_TIMEOUT",
    "Group",
    "Shard",
    "Single",
    "TorchGroup",
    "cpu_copy",
    "everywhere",
    "join",
    "state_digest",
]

T = TypeVar("T")

#: Seconds a rank waits for the others at a collective before it gives up. Ranks meet
#: every iteration; the longest a rank can fairly be ahead is rank 0's checkpoint write.
DEFAULT_TIMEOUT = 300.0


class Shard:
    """The part of every batch of `base` that one rank computes: contiguous, 1/world."""

    def __init__(self, base: ImageSet, rank: int, world: int) -> None:
        self.base = base
        self.rank = rank
        self.world = world

    def __len__(self) -> int:
        return len(self.base)  # the epoch order is drawn over the whole split

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per = len(indices) // self.world
        return self.base.batch(indices[self.rank * per : (self.rank + 1) * per])

    def narrow(
        self, indices: torch.Tensor, positions: torch.Tensor
    ) -> tuple[ImageSet, torch.Tensor, torch.Tensor]:
        """This rank's part of a batch and the images' positions in the epoch's order
        (what an image folder's augmentation is seeded by)."""
        per = len(indices) // self.world
        part = slice(self.rank * per, (self.rank + 1) * per)
        return self.base, indices[part], positions[part]


class Group:
    """The processes of one search; this base class is one process alone."""

    rank = 0
    local_rank = 0
    world = 1

    @property
    def main(self) -> bool:
        """Whether this rank writes the run directory and prints."""
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """The device this rank computes on."""
        return device

    def check_batch(self, batch_size: int) -> None:
        """Refuse a global batch that does not split evenly over the ranks."""

    def shard(self, data: ImageSet) -> ImageSet:
        return data

    def sum(self, values: npt.NDArray[np.float64], what: str) -> npt.NDArray[np.float64]:
        """Element-wise sum over the ranks."""
        return values

    def average_gradients(
        self, params: Iterable[torch.nn.Parameter], extras: list[float], what: str
    ) -> list[float]:
        """Average the gradients of `params` (those that have one) and `extras` over the
        ranks, in one all-reduce."""
        return extras

    def any_of(self, flags: list[bool], what: str) -> list[bool]:
        """Whether each of `flags` is set on any rank, in one collective."""
        return flags

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank."""
        return obj

    def check_same(self, digest: Callable[[], str], what: str) -> None:
        """Stop (RunError on every rank) if the ranks' digests of their state differ."""

    def part(self, count: int) -> range:
        """The indices of `count` work items that this rank takes."""
        return range(count)

    def report_failure(self, message: str) -> None:
        """Leave this rank's error where the other ranks can read it."""

    def close(self) -> None:
        pass


class Single(Group):
    """One process: every collective is the identity."""


class TorchGroup(Group):
    """N processes under torchrun; every collective is bounded by `timeout` seconds."""

    def __init__(self, timeout: float) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.timeout = timeout
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.store: Any = dist.distributed_c10d._get_default_store()
        self.count = 0  # collectives entered so far; the same sequence on every rank
        self.device = torch.device("cpu")

    def place(self, device: torch.device) -> torch.device:
        if device.type != "cuda":
            return device
        if device.index is not None:
            raise FpnasError(
                f"--device {device}: under torchrun every rank takes the GPU of its local "
                "rank; give --device cuda"
            )
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise FpnasError(
                f"local rank {self.local_rank} has no GPU: this host has {count}; give "
                f"torchrun --nproc-per-node {count} at most"
            )
        torch.cuda.set_device(self.local_rank)
        self.device = torch.device("cuda", self.local_rank)
        return self.device

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise FpnasError(
                f"--batch-size {batch_size} is the global batch and does not split over "
                f"{self.world} processes; give a multiple of {self.world}"
            )

    def shard(self, data: ImageSet) -> ImageSet:
        return Shard(data, self.rank, self.world)

    def sum(self, values: npt.NDArray[np.float64], what: str) -> npt.NDArray[np.float64]:
        # float64 on the CPU (gloo): the sums of thousands of nats keep their digits.
        tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64).copy())
        self._collective(what, lambda: self.dist.all_reduce(tensor))
        out: npt.NDArray[np.float64] = tensor.numpy()
        return out

    def average_gradients(
        self, params: Iterable[torch.nn.Parameter], extras: list[float], what: str
    ) -> list[float]:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads and not extras:  # no sample trained (the same on every rank)
            return extras
        device = grads[0].device if grads else self.device
        parts = [g.reshape(-1) for g in grads]
        parts.append(torch.tensor(extras, dtype=torch.float32, device=device))
        flat = torch.cat(parts)
        self._collective(what, lambda: self.dist.all_reduce(flat))
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n
        values: list[float] = flat[offset:].double().cpu().tolist()
        return values

    def any_of(self, flags: list[bool], what: str) -> list[bool]:
        tensor = torch.tensor([int(f) for f in flags], dtype=torch.int64)
        op = self.dist.ReduceOp.MAX
        self._collective(what, lambda: self.dist.all_reduce(tensor, op=op))
        return [bool(v) for v in tensor.tolist()]

    def broadcast(self, obj: T) -> T:
        box = [obj]
        self._collective(
            "the start of the search (rank 0 sends its settings and state)",
            lambda: self.dist.broadcast_object_list(box, src=0, device=torch.device("cpu")),
        )
        return box[0]

    def check_same(self, digest: Callable[[], str], what: str) -> None:
        # A CPU tensor, so that gloo carries it even where CUDA tensors go through NCCL.
        mine = torch.frombuffer(bytearray(digest().encode()), dtype=torch.uint8)
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        self._collective(what, lambda: self.dist.all_gather(gathered, mine))
        every = [bytes(t.tolist()).decode() for t in gathered]
        if len(set(every)) > 1:
            groups = ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(every))
            raise everywhere(
                RunError(
                    f"the ranks no longer agree on alpha and the weights after {what} "
                    f"({groups}); their reductions differed, so the run is not one search "
                    "any more; resume it from its last checkpoint"
                )
            )

    def part(self, count: int) -> range:
        return range(self.rank, count, self.world)

    def report_failure(self, message: str) -> None:
        # The store may be gone with the launcher; the message prints all the same.
        with contextlib.suppress(Exception):
            self.store.set(f"fpnas/failed/{self.rank}", message)

    def close(self) -> None:
        """Leave the group, every rank together. A rank that tore its connections down
        while another was still finishing its last collective was seen to abort
        (gloo: "terminate called without an active exception"), so the ranks first meet
        at a barrier; one that cannot be met (a rank died at the end) is not an error
        of this rank's search, whose result is already made."""
        if not self.dist.is_initialized():
            return
        with contextlib.suppress(RunError):
            self._collective("the end of the search", self.dist.barrier)
        self.dist.destroy_process_group()

    # ----------------------------------------------------------------------------------

    def _collective(self, what: str, fn: Callable[[], Any]) -> None:
        self.count += 1
        try:
            # Where this rank is, for the diagnosis of a rank whose collective fails.
            self.store.set(f"fpnas/at/{self.rank}", f"{self.count} {what}")
            fn()
        except (RuntimeError, ValueError) as exc:  # DistBackendError is a RuntimeError
            error = RunError(f"rank {self.rank}: {self._diagnose(what, exc)}")
            setattr(error, "rank_named", True)  # noqa: B010 (a mark, read with getattr)
            raise error from None

    def _diagnose(self, what: str, exc: BaseException) -> str:
        """Name the ranks that failed, or that never reached collective `self.count`."""
        text = str(exc)
        closed = any(s in text.lower() for s in ("closed", "reset", "broken pipe", "refused"))
        failed, behind, unknown = [], [], []
        with contextlib.suppress(Exception):
            self.store.set_timeout(datetime.timedelta(seconds=5))
        for r in range(self.world):
            if r == self.rank:
                continue
            try:
                if self.store.check([f"fpnas/failed/{r}"]):
                    message = self.store.get(f"fpnas/failed/{r}").decode()
                    failed.append(f"rank {r} failed: {message}")
                    continue
                if not self.store.check([f"fpnas/at/{r}"]):
                    behind.append(f"rank {r} (it never reached a collective)")
                    continue
                count, _, last = self.store.get(f"fpnas/at/{r}").decode().partition(" ")
                if int(count) < self.count:
                    behind.append(f"rank {r} (it last reached {last})")
            except Exception:
                unknown.append(r)
        if failed:
            return "; ".join(failed)
        how = (
            "its connection closed: it died"
            if closed
            else f"no answer within the timeout of {self.timeout:g} s: it hangs or died"
        )
        if behind:
            names = ", ".join(behind)
            return f"{names} did not reach {what} ({how})"
        if unknown:
            return (
                f"{what} failed ({clip(text, 200)}); ranks {unknown} cannot be asked where "
                "they are (the launcher's store is gone)"
            )
        others = ", ".join(str(r) for r in range(self.world) if r != self.rank)
        return (
            f"rank{'s' if self.world > 2 else ''} {others} had reached {what} too, and it "
            f"did not complete ({how}; {clip(text, 200)}): one of them stopped inside it"
        )


E = TypeVar("E", bound=BaseException)


def everywhere(error: E) -> E:
    """Mark an error that every rank raises at the same point (a non-finite loss after
    the reductions, an agreed stop): rank 0 prints it, the others end quietly."""
    setattr(error, "shared", True)  # noqa: B010 (a mark, read with getattr)
    return error


def cpu_copy(obj: Any) -> Any:
    """`obj` with every tensor in it on the CPU (for the start-up broadcast: a pickled
    CUDA tensor would land on the sender's GPU index)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


def join(timeout: float = DEFAULT_TIMEOUT) -> Group:
    """The group torchrun started this process in, or `Single()` outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1") or "1")
    if world <= 1:
        return Single()
    import torch.distributed as dist

    if not dist.is_available():
        raise FpnasError("this PyTorch build has no torch.distributed; run one process")
    # CPU tensors (the small reductions, the start-up broadcast) go through gloo, CUDA
    # tensors (the gradients) through NCCL.
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as exc:
        raise FpnasError(
            f"cannot join the other {world - 1} processes ({clip(str(exc), 200)}); start "
            "the search with torchrun (see docs/distributed.md)"
        ) from None
    return TorchGroup(timeout)


def state_digest(logits: npt.NDArray[np.float64], params: Iterable[torch.Tensor]) -> str:
    """A digest of alpha and the weights, compared across ranks once per epoch."""
    h = hashlib.sha256(np.ascontiguousarray(logits).tobytes())
    for p in params:
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
