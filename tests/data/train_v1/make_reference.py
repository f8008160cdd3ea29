"""How this directory was made, with the code of commit b974bbd (training state format
fpnas-train-state/1, checkpoints at epoch ends only), run from this directory:

    python make_reference.py straight straight   # expected_*: the uninterrupted run
    python make_reference.py split split         # the rest: stopped after epoch 1 of 2

tests/test_train_stop.py resumes the split run with today's code and compares it with
the straight one's records and weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fpnas_dsl.train import TrainConfig, train


class Stop(Exception):
    pass


def main() -> None:
    out, how = Path(sys.argv[1]), sys.argv[2]

    def log(line: str) -> None:
        print(line)
        if how == "split" and line.startswith("epoch 1/"):
            raise Stop  # right after the first epoch's state was written

    cfg = TrainConfig(
        data="synthetic:size=128,test_size=32,resolution=8",
        epochs=2,
        batch_size=16,
        warmup_epochs=0.5,
        ema_decay=0.9,
        threads=1,
        progress=False,
        seed=3,
    )
    try:
        train("ref.space", out, cfg, log=log)  # ref.space: train_ref.space as it was named
    except Stop:
        print("stopped after epoch 1")


if __name__ == "__main__":
    main()
