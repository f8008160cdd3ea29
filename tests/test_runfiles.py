"""Run-file I/O (`fpnas_dsl.runfiles`): one durability policy for every write, run
directories that vanish when a run fails before its first checkpoint, metrics cut back
to a checkpoint, the resume policy's message; and no import circle through it."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from fpnas_dsl import runfiles
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.runfiles import (
    NewRunDir,
    ResumePolicy,
    append_metrics,
    metrics_size_through,
    read_metrics,
    save_torch_atomic,
    truncate_metrics,
    write_json_atomic,
)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What was fsynced, by kind: 'file' or 'dir'."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        seen.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


@pytest.mark.parametrize("how", ["json", "torch"])
def test_every_write_syncs_the_file_then_its_directory(
    tmp_path: Path, synced: list[str], how: str
) -> None:
    target = tmp_path / "deep" / "x"
    if how == "json":
        write_json_atomic(target, {"a": 1})
        assert json.loads(target.read_text()) == {"a": 1}
    else:
        save_torch_atomic({"w": torch.arange(3)}, target)
        assert torch.equal(torch.load(target)["w"], torch.arange(3))
    assert synced == ["file", "dir"]
    assert [p.name for p in target.parent.iterdir()] == ["x"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    save_torch_atomic({"v": 1}, target)

    class Unpicklable:
        def __reduce__(self) -> Any:
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_torch_atomic({"v": Unpicklable()}, target)
    assert torch.load(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_metrics_are_cut_back_to_a_checkpoint(tmp_path: Path, synced: list[str]) -> None:
    path = tmp_path / "metrics.jsonl"
    append_metrics(path, {"type": "epoch", "epoch": 1})
    assert synced == ["file"]
    size = path.stat().st_size
    append_metrics(path, {"type": "epoch", "epoch": 2})
    with path.open("a") as fh:
        fh.write('{"type": "epoch", "ep')  # killed mid-line
    assert metrics_size_through(path, 1) == size
    assert metrics_size_through(path, 2) == 2 * size
    assert metrics_size_through(path, 9) == 2 * size  # the partial line is not kept
    truncate_metrics(path, size)
    assert read_metrics(path) == [{"type": "epoch", "epoch": 1}]
    truncate_metrics(path, 10 * size)  # longer than the file: nothing to cut
    assert path.stat().st_size == size
    truncate_metrics(tmp_path / "none.jsonl", 0)
    assert not (tmp_path / "none.jsonl").exists()


def test_a_new_run_directory_is_discarded_unless_kept(tmp_path: Path) -> None:
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("the user's")
    for path in (existing, tmp_path / "a" / "b" / "run"):
        run = NewRunDir(path)
        with pytest.raises(RuntimeError), run.discarded_unless(lambda: False):
            run.make()
            write_json_atomic(path / "config.json", {})
            (path / "sub").mkdir()
            raise RuntimeError("failed before its first checkpoint")
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "a").exists()
    kept = NewRunDir(tmp_path / "kept")
    with pytest.raises(RuntimeError), kept.discarded_unless(lambda: True):
        kept.make()
        raise RuntimeError("failed after a checkpoint")
    assert (tmp_path / "kept").is_dir()


def test_resume_policy_names_what_cannot_change(tmp_path: Path) -> None:
    policy = ResumePolicy(("epochs", "device", "data_dir"), "start a new run for others")
    policy.check(tmp_path, [("epochs", "--epochs", 9, 3), ("lr", "--lr", 0.1, 0.1)])
    with pytest.raises(FpnasError) as err:
        policy.check(tmp_path, [("lr", "--lr", 0.2, 0.1), ("device", "--device", "cuda", "cpu")])
    message = str(err.value)
    assert "these cannot change: --lr 0.2 (the run's: 0.1)." in message
    assert "Only --epochs (a new total), --device and --data-dir can; start a new run" in message


def _imports(module: Path) -> set[str]:
    """The fpnas_dsl modules a file imports, anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("fpnas_dsl.")}


def test_run_file_io_sits_below_what_reads_architectures() -> None:
    """runfiles imports no other fpnas module but errors; archfile writes through it,
    and sources (open_source) reads through both: no circle among them."""
    package = Path(runfiles.__file__).parent
    assert _imports(package / "runfiles.py") == {"fpnas_dsl.errors"}
    assert "fpnas_dsl.sources" not in _imports(package / "archfile.py")
    assert {"fpnas_dsl.archfile", "fpnas_dsl.runfiles"} <= _imports(package / "sources.py")
