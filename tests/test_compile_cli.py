"""`fpnas compile`: the summary, --json, --ir, overrides, and errors without tracebacks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dsl_samples import REQUIRED_KEYS, TINY, with_lines

from fpnas_dsl import cli, ir

ROOT = Path(__file__).resolve().parent.parent
#: Every subcommand, as the CLI declares it (the fixture below narrows cli.COMMANDS).
ALL_COMMANDS = dict(cli.COMMANDS)


@pytest.fixture(autouse=True)
def only_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test `compile` alone: the other subcommands' modules belong to other tests."""
    monkeypatch.setattr(cli, "COMMANDS", {"compile": cli.COMMANDS["compile"]})


def test_text_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compile", "fbnetv2_f"]) == 0
    out = capsys.readouterr().out
    assert "space fbnetv2_f" in out
    assert "architectures        2695612494689630945280000  (2.70e24, 10^24.43)" in out
    assert "uniform entropy      56.2537 nats" in out
    assert "initial K            14  (lambda 1/4)" in out
    assert "alpha parameters     176 factorized (FD), 3,624 joint (JD)" in out
    assert "blocks 17   rows 10   decisions 10" in out


def test_weight_sharing_and_supernet_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["compile", "fbnetv2_f_pp"]) == 0
    out = capsys.readouterr().out
    assert "weights shared       kernel, attention, residual" in out
    assert "supernet             28.4M weights, 109 MiB in float32" in out
    separate = tmp_path / "separate.space"
    separate.write_text(with_lines(TINY, {12: "    share none\n}"}))
    assert cli.main(["compile", str(separate), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["weight_sharing"] == {"m": []}
    assert cli.main(["compile", str(separate)]) == 0
    assert (
        "weights shared       nothing (separate weights per candidate)" in capsys.readouterr().out
    )
    shared_size = json.loads(_compile_json(capsys, TINY, tmp_path))["supernet"]["params"]
    assert summary["supernet"]["params"] > shared_size


def _compile_json(capsys: pytest.CaptureFixture[str], text: str, tmp_path: Path) -> str:
    path = tmp_path / "space.space"
    path.write_text(text)
    assert cli.main(["compile", str(path), "--json"]) == 0
    return capsys.readouterr().out


def test_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compile", "fbnetv2_f_pp", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) >= REQUIRED_KEYS
    assert summary["name"] == "fbnetv2_f_pp"
    assert summary["architectures"] == str(2695612494689630945280000 * 1024)
    assert isinstance(summary["architectures"], str)


def test_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "compile",
            "fbnetv2_f",
            "--resolution",
            "28",
            "--in-channels",
            "1",
            "--classes",
            "10",
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["resolution"], summary["in_channels"], summary["classes"]) == (28, 1, 10)
    assert summary["output_size"] == 1


def test_ir_file_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fbnetv2_f.ir.json"
    assert cli.main(["compile", "fbnetv2_f", "--ir", str(target)]) == 0
    assert f"IR written to {target}" in capsys.readouterr().out
    space = ir.Space.model_validate_json(target.read_text())
    assert ir.count_architectures(space) == 2695612494689630945280000


def test_ir_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compile", "mobilenet_v2", "--ir", "-"]) == 0
    space = ir.Space.model_validate_json(capsys.readouterr().out)
    assert space.name == "mobilenet_v2"


def test_space_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.space"
    bad.write_text(with_lines(TINY, {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 3"}))
    assert cli.main(["compile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:17:38: error: stride 3 is not allowed; allowed: 1, 2" in err
    assert "Traceback" not in err


def test_missing_space_and_bad_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compile", "no_such_space"]) == 2
    assert "no space 'no_such_space'" in capsys.readouterr().err
    assert cli.main(["compile", "fbnetv2_f", "--resolution", "0"]) == 2
    assert "--resolution must be a whole number" in capsys.readouterr().err
    assert cli.main(["compile", "fbnetv2_f", "--resolution", "8"]) == 2
    assert "reduce the 8x8 input below 1x1" in capsys.readouterr().err


def test_unwritable_ir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["compile", "mobilenet_v2", "--ir", str(blocker / "dir.json")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert cli.main(["compile", "mobilenet_v2", "--ir", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [blocker]


def test_ir_creates_missing_directories(tmp_path: Path) -> None:
    """Issue 11, item 12: every output path creates its missing parent directories, as
    `fpnas search --out` does."""
    target = tmp_path / "no" / "such" / "dir.json"
    assert cli.main(["compile", "mobilenet_v2", "--ir", str(target)]) == 0
    assert json.loads(target.read_text())["name"] == "mobilenet_v2"


# ---- in a fresh process ---------------------------------------------------------------

_COMPILE_ONLY = (
    "import sys, fpnas_dsl.cli as c; "
    "c.COMMANDS = {'compile': c.COMMANDS['compile']}; "
    "sys.exit(c.main(sys.argv[1:]))"
)


def _all_commands_present() -> bool:
    return all(
        importlib.util.find_spec(f"fpnas_dsl.commands.{module}") is not None
        for module, _ in ALL_COMMANDS.values()
    )


def _run(args: list[str], module: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    head = ["-m", "fpnas_dsl"] if module else ["-c", _COMPILE_ONLY]
    return subprocess.run(
        [sys.executable, *head, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("module", [False, True], ids=["compile-only", "python-m-fpnas_dsl"])
def test_broken_file_in_a_subprocess(tmp_path: Path, module: bool) -> None:
    if module and not _all_commands_present():
        pytest.skip("not every subcommand module exists yet")
    bad = tmp_path / "broken.space"
    bad.write_text(with_lines(TINY, {10: "    act {relu, gelu}"}))
    result = _run(["compile", str(bad)], module)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{bad}:10:16: error: unknown activation 'gelu'" in result.stderr
    assert "   10 |     act {relu, gelu}" in result.stderr
    assert "help: did you mean 'relu'?" in result.stderr
    assert result.stdout == ""


def test_syntax_error_in_a_subprocess(tmp_path: Path) -> None:
    bad = tmp_path / "broken.space"
    bad.write_bytes(b"space x\ninput 32 x 32 x\n\xff\n")
    result = _run(["compile", str(bad)], module=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:3:1: error: the file is not valid UTF-8" in result.stderr


def test_compile_runs_in_a_subprocess() -> None:
    result = _run(["compile", "spaces/fbnetv2_f_pp.space", "--json"], module=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "fbnetv2_f_pp"
