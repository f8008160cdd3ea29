"""One rank of `fpnas search` under torchrun that also records, for test_distributed.py,
alpha after every iteration and what the rank found at the end.

    torchrun --nproc-per-node 2 tests/distributed_worker.py RECORD_DIR search SPACE ...

Writes RECORD_DIR/alpha<rank>.npz (one array per iteration, in order) and
RECORD_DIR/result<rank>.json (the result, the argmax and a digest of the weights).
With NUDGE_RANK=r, rank r changes one weight after its first iteration.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpnas_dsl.cli import main
from fpnas_dsl.search.distributed import state_digest
from fpnas_dsl.search.loop import Search

record = Path(sys.argv[1])
rank = int(os.environ.get("RANK", "0"))
alphas: list[np.ndarray] = []
real_iteration = Search.iteration
real_finish = Search.finish


#: A rank whose weights are nudged after its first iteration (the ranks must notice).
nudged = int(os.environ.get("NUDGE_RANK", "-1"))


def iteration(self: Search, *args: Any, **kwargs: Any) -> dict[str, Any]:
    out = real_iteration(self, *args, **kwargs)
    alphas.append(self.dist.logits.copy())
    if rank == nudged and len(alphas) == 1:
        with torch.no_grad():
            next(self.supernet.parameters()).view(-1)[0] += 1e-6
    return out


def finish(self: Search) -> dict[str, Any]:
    result = real_finish(self)
    digest = state_digest(self.dist.logits, self.supernet.parameters())
    doc = {"argmax": self.dist.argmax().tolist(), "digest": digest, **result}
    (record / f"result{rank}.json").write_text(json.dumps(doc))
    return result


Search.iteration = iteration  # type: ignore[method-assign]
Search.finish = finish  # type: ignore[method-assign]
code = main(sys.argv[2:])
np.savez(record / f"alpha{rank}.npz", *alphas)
sys.exit(code)
