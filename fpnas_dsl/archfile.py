"""arch.json: one architecture, self-contained.

It holds the readable architecture (space name, input, blocks), the numbers a reader
checks first (FLOPS, params, accuracy where known) and the compiled space IR under "ir",
so that export, train and show need nothing but this file.

A fixed space (a .space file or bundled space with one network, `ir.count_networks`) is
an architecture too: `is_space_argument` recognises one and `load_fixed` reads it.

The minimal form that `fpnas cost` reads, `{"blocks": [...]}` (optionally with `space`,
`resolution`, `in_channels`, `classes`), is accepted everywhere too: its blocks are read
against the space given with `--space` (a .space file or a bundled name), or against the
bundled space its `space` names.

Every problem is one FpnasError naming the file; blocks count from 1, as everywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fpnas_dsl.errors import FpnasError, SpaceError, clip
from fpnas_dsl.ir import Architecture, ArchitectureMismatch, Space, encode
from fpnas_dsl.runfiles import write_json_atomic

ARCH_FIELDS = set(Architecture.model_fields)
INPUT_FIELDS = ("resolution", "in_channels", "classes")


def arch_document(space: Space, arch: Architecture, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = arch.model_dump(mode="json")
    doc.update(extra)
    doc["ir"] = space.portable_dump()
    return doc


def save_arch(path: Path, space: Space, arch: Architecture, **extra: Any) -> None:
    write_json_atomic(Path(path), arch_document(space, arch, **extra))


def read_json_file(path: Path | str, what: str = "architecture file") -> Any:
    """The JSON value of a file; one FpnasError for a missing, empty, binary or invalid one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FpnasError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FpnasError(f"{path}: is a directory, not an {what}") from None
    except OSError as exc:
        raise FpnasError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise FpnasError(f"{path}: empty file, expected an {what} (JSON)")
    if b"\x00" in data[:8192]:
        raise FpnasError(f"{path}: a binary file, not an {what} (JSON)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FpnasError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}), "
            f"expected an {what} (JSON)"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FpnasError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise FpnasError(f"{path}: JSON nested too deeply") from None


def read_arch_doc(path: Path | str) -> dict[str, Any]:
    """The JSON object of an architecture file (it needs a 'blocks' list)."""
    doc = read_json_file(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("blocks"), list):
        raise FpnasError(f"{path}: not an architecture (needs a 'blocks' list)")
    return doc


def describe_validation(exc: ValidationError) -> str:
    """The first problem of a pydantic error, with blocks and rows counted from 1."""
    first = exc.errors()[0]
    parts: list[str] = []
    loc = list(first["loc"])
    i = 0
    while i < len(loc):
        item = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if item in ("blocks", "rows", "stem", "head", "classifier", "micros") and isinstance(
            nxt, int
        ):
            noun = {"blocks": "block", "rows": "row", "micros": "micro"}.get(str(item), item)
            parts.append(f"{noun} {nxt + 1}")
            i += 2
            continue
        parts.append(f"item {item + 1}" if isinstance(item, int) else str(item))
        i += 1
    message = str(first["msg"]).removeprefix("Value error, ")
    if message == "Field required":
        message = "missing"
    elif message == "Extra inputs are not permitted":
        message = "not a field of it"
    where = ", ".join(parts)
    return f"{where}: {message}" if where else message


def input_fields(doc: dict[str, Any], where: str) -> dict[str, int]:
    """The input size an architecture file records; a bad value blames the file."""
    from fpnas_dsl.validate import MAX_NUMBER

    out: dict[str, int] = {}
    for key in INPUT_FIELDS:
        if key not in doc or doc[key] is None:
            continue
        value = doc[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NUMBER:
            raise FpnasError(
                f"{where}: {key!r} is {clip(json.dumps(value), 80)}; it must be a whole "
                f"number from 1 to {MAX_NUMBER}"
            )
        out[key] = value
    return out


def arch_from_blocks(
    space: Space, blocks: Any, where: str, name: str | None = None
) -> Architecture:
    """The readable blocks of a file as an architecture of `space` (checked against it)."""
    if name is not None and name != space.name:
        raise FpnasError(f"{where}: architecture of space {name!r}, not of {space.name!r}")
    try:
        arch = Architecture.model_validate(
            {
                "space": space.name,
                "resolution": space.resolution,
                "in_channels": space.in_channels,
                "classes": space.classes,
                "blocks": blocks,
            }
        )
    except ValidationError as exc:
        raise FpnasError(f"{where}: invalid architecture at {describe_validation(exc)}") from None
    check_arch(space, arch, where)
    return arch


def _space_from_ir(doc: dict[str, Any], where: str) -> Space:
    from fpnas_dsl.validate import validate_space

    hint = "; pass --space SPACE to read the blocks against a .space file instead"
    try:
        space = Space.model_validate(doc["ir"])
    except ValidationError as exc:
        raise FpnasError(
            f"{where}: its compiled space ('ir') is damaged at {describe_validation(exc)}{hint}"
        ) from None
    try:
        validate_space(space)
    except SpaceError as err:
        raise FpnasError(
            f"{where}: its compiled space ('ir') is invalid: {err.message}{hint}"
        ) from None
    except (RecursionError, ArithmeticError, ValueError, KeyError, IndexError, TypeError) as err:
        raise FpnasError(
            f"{where}: its compiled space ('ir') is inconsistent ({type(err).__name__}){hint}"
        ) from None
    return space


def load_arch(
    path: Path | str, space: str | None = None
) -> tuple[Space, Architecture, dict[str, Any]]:
    """Read an architecture file -> (space, architecture, the other fields).

    The space is `space` (a .space path or a bundled name) where given, else the file's
    compiled space ('ir'), else the bundled space its 'space' names. FpnasError if
    unusable."""
    where = str(path)
    doc = read_arch_doc(path)
    extra = {k: v for k, v in doc.items() if k not in ARCH_FIELDS and k != "ir"}
    if space is None and "ir" in doc:
        compiled = _space_from_ir(doc, where)
        try:
            arch = Architecture.model_validate({k: v for k, v in doc.items() if k in ARCH_FIELDS})
        except ValidationError as exc:
            raise FpnasError(
                f"{where}: invalid architecture at {describe_validation(exc)}"
            ) from None
        check_arch(compiled, arch, where)
        return compiled, arch, extra
    from fpnas_dsl.parser import load_space
    from fpnas_dsl.resources import resolve_space_path

    name = doc.get("space")
    if space is None:
        if not isinstance(name, str) or resolve_space_path(name) is None:
            raise FpnasError(
                f"{where}: the architecture has no compiled space ('ir')"
                + (f" and {name!r} is not a bundled space" if isinstance(name, str) else "")
                + "; pass --space SPACE (the .space file or bundled space it belongs to)"
            )
        space = name
    compiled = load_space(space, **input_fields(doc, where))
    arch = arch_from_blocks(compiled, doc["blocks"], where, name if isinstance(name, str) else None)
    return compiled, arch, extra


def check_arch(space: Space, arch: Architecture, where: str) -> None:
    """Refuse an architecture that the space cannot produce (another space's, say)."""
    if arch.space != space.name:
        raise FpnasError(f"{where}: architecture of space {arch.space!r}, expected {space.name!r}")
    try:
        encode(space, arch)
    except ArchitectureMismatch as exc:
        raise FpnasError(f"{where}: {exc}") from None


def is_space_argument(path: Path | str) -> bool:
    """Whether a command's ARCH argument names a space rather than an architecture file:
    a `.space` file, or the name of a bundled space that is not also a path."""
    from fpnas_dsl.resources import resolve_space_path

    path = Path(path)
    if path.suffix == ".space":
        return True
    return not path.exists() and path.suffix == "" and resolve_space_path(str(path)) is not None


def load_fixed(
    name_or_path: Path | str,
    resolution: int | None = None,
    in_channels: int | None = None,
    classes: int | None = None,
    advice: str = "",
) -> tuple[Space, Architecture]:
    """(space, its one network) of a fixed space; FpnasError (exit 2) for a search space,
    naming how many networks it holds and what to pass instead (`advice`)."""
    from fpnas_dsl.ir import count_networks, fixed_architecture
    from fpnas_dsl.parser import load_space
    from fpnas_dsl.summary import count_text

    space = load_space(name_or_path, resolution, in_channels, classes)
    arch = fixed_architecture(space)
    if arch is None:
        advice = advice or (
            "pass one of its architectures: an arch.json from `fpnas search`, or a minimal "
            f'{{"blocks": [...]}} file with --space {name_or_path}'
        )
        raise FpnasError(
            f"{name_or_path}: space {space.name!r} is a search space of "
            f"{count_text(count_networks(space))} networks, not one network; {advice}"
        )
    return space, arch
