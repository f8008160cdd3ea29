"""Data files shipped with the package: the grammar and the bundled spaces.

In a wheel they sit inside the package (CMake installs them there); in a source checkout
or an editable install they are the repository's top-level `grammar/` and `spaces/`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _data_dir(name: str) -> Path:
    packaged = Path(str(resources.files("fpnas_dsl"))) / name
    if packaged.is_dir():
        return packaged
    return _REPO_ROOT / name


def grammar_path() -> Path:
    return _data_dir("grammar") / "fpnas.lark"


def spaces_dir() -> Path:
    return _data_dir("spaces")


def bundled_spaces() -> list[str]:
    """Names of the bundled spaces (file stems), sorted."""
    return sorted(p.stem for p in spaces_dir().glob("*.space"))


def resolve_space_path(name_or_path: str) -> Path | None:
    """A path as given if it exists, else a bundled space of that name; None if neither."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".space")
    candidate = spaces_dir() / f"{stem}.space"
    return candidate if candidate.is_file() else None
