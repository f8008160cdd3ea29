import sys, json, shutil
from pathlib import Path
from fpnas_dsl.train import TrainConfig, train
out = Path(sys.argv[1])
class Stop(Exception): pass
def log(line):
    print(line)
    if sys.argv[2] == "split" and line.startswith("epoch 1/"):
        raise Stop
cfg = TrainConfig(data="synthetic:size=128,test_size=32,resolution=8", epochs=2, batch_size=16,
                  warmup_epochs=0.5, ema_decay=0.9, threads=1, progress=False, seed=3)
try:
    train("ref.space", out, cfg, log=log)
except Stop:
    print("stopped")
