"""Starting one search on every rank, and running it: what `fpnas search` and
`fpnas_dsl.run_search` share.

Alone (no torchrun) the group is `Single` and this is `prepare_search` then `run`. Under
torchrun, rank 0 settles the settings (a resumed run's are in its config.json) and
sends them; every rank builds its search at the same time; rank 0 makes (or reopens)
the run directory and sends its run directory and state, which the other ranks restore
(`fpnas_dsl.search.run.join_search`), so that every rank starts from the same weights
and alpha. Only rank 0 touches the run directory. When the start fails on rank 0, every
rank ends with its exit code and only rank 0 says why; an error every rank raises at the
same point (marked by `distributed.everywhere`) is said once, by rank 0 (the others'
copies are marked `quiet`); any other error names its rank and is left in torchrun's
store for the other ranks' diagnosis.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from fpnas_dsl.errors import FpnasError, Interrupted, RunError
from fpnas_dsl.search import distributed
from fpnas_dsl.search.checkpoint import CHECKPOINT
from fpnas_dsl.search.config import SearchConfig, make_config
from fpnas_dsl.search.distributed import Group, cpu_copy, everywhere
from fpnas_dsl.search.loop import Search
from fpnas_dsl.search.run import join_search, prepare_search

__all__ = ["search_everywhere", "start_search"]

T = TypeVar("T")
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def search_everywhere(
    settle: Callable[[], SearchConfig],
    *,
    resume: Path | None = None,
    timeout: float = distributed.DEFAULT_TIMEOUT,
    progress: bool = True,
    log: Log = _stderr,
    started: Log | None = None,
) -> tuple[dict[str, Any], bool]:
    """Join torchrun's group (or run alone), start the search with the settings that
    `settle()` gives on rank 0, run it, and return its result (with `run_dir`) and
    whether this is rank 0. `started` is told the run directory once it is made."""
    group = distributed.join(timeout)
    try:
        search = start_search(group, settle, resume, log)
        if group.main and started is not None:
            started(f"fpnas search: run directory {search.run_dir}")
        result = search.run(progress=progress)
    except FpnasError as err:
        if group.world == 1:
            raise
        if getattr(err, "shared", False):  # every rank raised it: rank 0 says it
            group.close()
            if not group.main:
                setattr(err, "quiet", True)  # noqa: B010 (a mark, read with getattr)
            raise
        if not getattr(err, "rank_named", False):
            err.args = (f"rank {group.rank}: {err}",)
        group.report_failure(str(err))
        raise
    group.close()
    return {"run_dir": str(search.run_dir), **result}, group.main


def start_search(
    group: Group,
    settle: Callable[[], SearchConfig],
    resume: Path | None = None,
    log: Log = _stderr,
) -> Search:
    """The search of this rank, built from rank 0's settings and state."""

    def settled() -> dict[str, Any]:
        config = settle()
        group.check_batch(config.batch_size)
        return config.model_dump()

    config = make_config(_from_rank_0(group, settled))
    if not group.main:
        return _joined(group, join_search(config, group))
    try:
        search = prepare_search(config, resume=resume, log=log, group=group)
    except FpnasError as err:
        group.broadcast(("failed", err.exit_code))  # the others end with its code
        raise everywhere(err) from None
    except BaseException as err:
        group.broadcast(("failed", _exit_code(err)))
        raise
    try:
        group.broadcast(("ok", (str(search.run_dir), cpu_copy(search.state()))))
    except BaseException:
        if search.discard is not None:
            search.discard()
        raise
    return search


def _exit_code(err: BaseException) -> int:
    if isinstance(err, FpnasError):
        return err.exit_code
    return Interrupted.exit_code if isinstance(err, KeyboardInterrupt) else RunError.exit_code


def _quiet(code: int) -> FpnasError:
    """The end of a rank whose rank 0 failed (and said why)."""
    err = everywhere(FpnasError("rank 0 could not start the search"))
    err.exit_code = code
    return err


def _from_rank_0(group: Group, make: Callable[[], T]) -> T:
    """Rank 0's `make()` on every rank; when it fails there, every rank ends with its code."""
    if not group.main:
        status, value = group.broadcast(("", cast(Any, None)))
        if status != "ok":
            raise _quiet(int(value))
        return cast(T, value)
    try:
        value = make()
    except FpnasError as err:
        group.broadcast(("failed", err.exit_code))
        raise everywhere(err) from None
    except BaseException as err:
        group.broadcast(("failed", _exit_code(err)))
        raise
    group.broadcast(("ok", value))
    return value


def _joined(group: Group, search: Search) -> Search:
    """A non-zero rank's search with rank 0's run directory and state."""
    status, value = group.broadcast(("", cast(Any, None)))
    if status != "ok":
        raise _quiet(int(value))
    run_dir, state = value
    search.run_dir = Path(run_dir)
    search.restore(search.run_dir / CHECKPOINT, None, state)
    return search
