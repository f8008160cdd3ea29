"""Launching from a clone's root: the README's torchrun line, `python -m fpnas_dsl` and a
script there work, although the source tree, which has no compiled core, comes first on
sys.path and shadows the installed package; a core that cannot be had is exit 2 with what
to do, never "a bug in fpnas".

Each test runs in a copy of the source tree laid out like a fresh clone after
`pip install .` (fpnas_dsl/ without `_core*.so`, grammar/, spaces/), with PYTHONPATH unset,
so that what is imported is what a user in the clone's root gets: the tree's Python and the
installed distribution's core (`fpnas_dsl.native`)."""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_api import python_blocks
from test_search import DATA, TARGET, TINY

from fpnas_dsl import native

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LIMIT = 300  # seconds any one launch may take


def installed_core() -> Path | None:
    try:
        return native._core_file(importlib.metadata.distribution(native.DISTRIBUTION))
    except importlib.metadata.PackageNotFoundError:
        return None


needs_install = pytest.mark.skipif(
    installed_core() is None or installed_core().parent == ROOT / "fpnas_dsl",  # type: ignore[union-attr]
    reason="needs fpnas installed in site-packages (`pip install .`) apart from this tree",
)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A copy of the source tree as a clone has it: no compiled core, no caches."""
    root = tmp_path / "clone"
    ignore = shutil.ignore_patterns("_core*.so", "_core*.pyd", "__pycache__")
    shutil.copytree(ROOT / "fpnas_dsl", root / "fpnas_dsl", ignore=ignore)
    for data in ("grammar", "spaces"):
        shutil.copytree(ROOT / data, root / data)
    shutil.copy(TINY, root / "tiny.space")
    assert [p.name for p in (root / "fpnas_dsl").glob("_core*")] == ["_core.pyi"]
    return root


def run_in(root: Path, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.pop("FPNAS_DEBUG", None)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a rank that aborts prints where it was
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=LIMIT)


def torchrun_lines(doc: Path) -> list[str]:
    """The torchrun commands of the document's sh blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [" ".join(line.split()) for line in lines if line.startswith("torchrun ")]


def test_the_docs_launch_torchrun_through_the_installed_command() -> None:
    for doc, count in ((README, 2), (ROOT / "docs" / "distributed.md", 4)):
        lines = torchrun_lines(doc)
        assert len(lines) >= count, doc
        for line in lines:
            assert " --no-python fpnas search " in line, (doc, line)


def tiny_search(out: str) -> list[str]:
    return [
        "search", "tiny.space", "--data", DATA, "--target-flops", str(TARGET),
        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--lam", "0.5",
        "--eval-batches", "1", "--threads", "1", "--no-progress", "--out", out,
    ]  # fmt: skip


def torchrun(*launch: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", *launch]


@needs_install
@pytest.mark.skipif(shutil.which("fpnas") is None, reason="the fpnas command is not on PATH")
def test_the_readme_torchrun_line_runs_from_the_clone_root(clone: Path) -> None:
    line = torchrun_lines(README)[0]
    launch = line.split(" search ", 1)[0].split()[1:]  # after `torchrun`, up to `search`
    launch = [a for a in launch if a != "--standalone"]
    launch[launch.index("--nproc-per-node") + 1] = "2"
    done = run_in(clone, torchrun(*launch, *tiny_search("runs/two")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (clone / "runs" / "two" / "arch.json").is_file()
    assert "bug in fpnas" not in done.stderr


@needs_install
def test_torchrun_dash_m_runs_from_the_clone_root(clone: Path) -> None:
    done = run_in(clone, torchrun("--nproc-per-node", "2", "-m", "fpnas_dsl", *tiny_search("r")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (clone / "r" / "arch.json").is_file()


@needs_install
def test_python_dash_m_selfcheck_runs_from_the_clone_root(clone: Path) -> None:
    done = run_in(clone, [sys.executable, "-m", "fpnas_dsl", "selfcheck"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("core ok:"), done.stdout


@needs_install
def test_a_script_in_the_clone_root_uses_the_tree_and_the_installed_core(clone: Path) -> None:
    (clone / "probe.py").write_text(
        "import fpnas_dsl, fpnas_dsl.distribution as d\n"
        "print(fpnas_dsl.__file__)\n"
        "print(d._core.__file__)\n"
        "print(round(d.Distribution([[2, 3]]).entropy(), 6))\n"
    )
    done = run_in(clone, [sys.executable, "probe.py"])
    assert done.returncode == 0, done.stderr
    package, core, entropy = done.stdout.split()
    assert Path(package).parent == clone / "fpnas_dsl"
    assert Path(core) == installed_core()
    assert entropy == "1.791759"  # ln 6: uniform over 2 x 3 choices


@needs_install
def test_the_api_example_runs_as_a_script_in_the_clone_root(clone: Path) -> None:
    (blocks,) = python_blocks((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))
    (clone / "example.py").write_text(blocks)
    done = run_in(clone, [sys.executable, "example.py"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checker (full)" in done.stdout


def one_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "bug" not in lines[0], lines[0]
    return lines[0]


@needs_install
def test_an_installed_core_of_another_version_is_refused(clone: Path) -> None:
    init = clone / "fpnas_dsl" / "version.py"
    init.write_text(re.sub(r'__version__ = ".*"', '__version__ = "0.0.0"', init.read_text()))
    message = one_error(run_in(clone, [sys.executable, "-m", "fpnas_dsl", "selfcheck"]))
    assert message.startswith("fpnas selfcheck: the fpnas Python package was imported from ")
    assert "source tree" in message and "has no compiled core" in message
    assert "another version than this tree's 0.0.0" in message
    assert "run from another directory" in message and "--no-python fpnas" in message


@needs_install
def test_an_installed_core_of_another_interface_is_refused(clone: Path) -> None:
    with (clone / "fpnas_dsl" / "_core.pyi").open("a") as stub:
        stub.write("def added_in_this_tree() -> None: ...\n")
    message = one_error(run_in(clone, [sys.executable, "-m", "fpnas_dsl", "selfcheck"]))
    assert "another interface (_core.pyi differs" in message
    assert "pip install ." in message


def test_a_core_that_cannot_be_loaded_is_said_so(clone: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]  # this interpreter's first choice
    (clone / "fpnas_dsl" / f"_core{suffix}").write_bytes(b"not a shared library")
    message = one_error(run_in(clone, [sys.executable, "-m", "fpnas_dsl", "selfcheck"]))
    assert "the compiled core in " in message and "cannot be loaded" in message
    assert "pip install ." in message


def test_no_core_anywhere_says_the_build_is_missing(clone: Path) -> None:
    # As if fpnas were not installed: the tree alone, no distribution to take a core from.
    code = (
        "import importlib.metadata as m, sys\n"
        "def absent(name): raise m.PackageNotFoundError(name)\n"
        "m.distribution = absent\n"
        "from fpnas_dsl.cli import main\n"
        "sys.exit(main(['selfcheck']))\n"
    )
    message = one_error(run_in(clone, [sys.executable, "-c", code]))
    assert message.startswith("fpnas selfcheck: fpnas's compiled core is not built: ")
    assert "`pip install .`" in message


def test_a_missing_third_party_module_is_not_called_a_bug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fpnas_dsl import cli
    from fpnas_dsl.commands import selfcheck

    def missing(args: object) -> int:
        raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")

    monkeypatch.setattr(selfcheck, "run", missing)
    assert cli.main(["selfcheck"]) == 2
    err = capsys.readouterr().err
    assert "`onnxruntime` that fpnas needs is not installed" in err and "bug" not in err
