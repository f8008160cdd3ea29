"""arch.json: one architecture, self-contained.

It holds the readable architecture (space name, input, blocks), the numbers a reader
checks first (FLOPS, params, accuracy where known) and the compiled space IR under "ir",
so that export, train and show need nothing but this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Architecture, ArchitectureMismatch, Space, encode

ARCH_FIELDS = set(Architecture.model_fields)


def arch_document(space: Space, arch: Architecture, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = arch.model_dump(mode="json")
    doc.update(extra)
    doc["ir"] = space.model_dump(mode="json")
    return doc


def save_arch(path: Path, space: Space, arch: Architecture, **extra: Any) -> None:
    path.write_text(json.dumps(arch_document(space, arch, **extra), indent=2) + "\n")


def load_arch(path: Path) -> tuple[Space, Architecture, dict[str, Any]]:
    """Read arch.json -> (space, architecture, the other fields). FpnasError if unusable."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FpnasError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FpnasError(f"{path}: not a readable JSON architecture file ({exc})") from None
    if not isinstance(doc, dict) or "blocks" not in doc or "ir" not in doc:
        raise FpnasError(f"{path}: not an fpnas arch.json (needs 'blocks' and 'ir')")
    try:
        space = Space.model_validate(doc["ir"])
        arch = Architecture.model_validate({k: v for k, v in doc.items() if k in ARCH_FIELDS})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FpnasError(f"{path}: invalid architecture at {where}: {first['msg']}") from None
    check_arch(space, arch, str(path))
    return space, arch, {k: v for k, v in doc.items() if k not in ARCH_FIELDS and k != "ir"}


def check_arch(space: Space, arch: Architecture, where: str) -> None:
    """Refuse an architecture that the space cannot produce (another space's, say)."""
    if arch.space != space.name:
        raise FpnasError(f"{where}: architecture of space {arch.space!r}, expected {space.name!r}")
    try:
        encode(space, arch)
    except ArchitectureMismatch as exc:
        raise FpnasError(f"{where}: {exc}") from None
