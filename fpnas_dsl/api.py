"""The Python API: what the `fpnas` command line does, callable from a notebook.

Re-exported at the package's top level (`import fpnas_dsl as fp`); the names differ from
the modules' (`fpnas_dsl.cost`, `fpnas_dsl.export`, ...), which hold the details:

- `load_space(name_or_path, resolution=, in_channels=, classes=)`, `parse_space(text)`:
  a validated `Space` (a bundled name such as "efficientnet_b0", or a .space path);
- `summarize(space)`: what `fpnas compile --json` prints (architectures, networks, entropy,
  FLOPS range, ...);
- `architecture(space, arch=None)`: a readable `Architecture` from an arch.json path, its
  JSON dict, choice indices, or nothing for a fixed space (its one network);
- `network_cost(space, arch=None)`: `Cost(flops, params)`, exact (FLOPS as multiply-accumulates);
- `build_network(space, arch=None)`: the standalone `torch.nn.Module`;
- `run_search(space, target_flops=, **settings)`: an FP-NAS search (a run directory), with
  the settings of `fpnas search` (or a `SearchConfig`, or a TOML/YAML config file);
- `export_network(source, format, out)`: ONNX, TorchScript or JSON, verified as `fpnas export`
  verifies (a path `fpnas export` takes, or a `Space` with an optional `arch`).

Errors are `FpnasError`s with the messages the CLI prints. torch is imported by the
functions that need it, not by `import fpnas_dsl`, so loading and pricing spaces stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Architecture, Space
from fpnas_dsl.parser import load_space, parse_space

if TYPE_CHECKING:
    from fpnas_dsl.export import ExportReport, Format
    from fpnas_dsl.nn.network import Network
    from fpnas_dsl.search.config import SearchConfig

__all__ = [
    "Architecture",
    "Cost",
    "Space",
    "architecture",
    "build_network",
    "export_network",
    "load_space",
    "network_cost",
    "parse_space",
    "run_search",
    "summarize",
]

#: What `arch=` accepts: a readable architecture, the path of an arch.json (or a search
#: or training directory), its JSON dict (`{"blocks": [...]}`), choice indices [D, V],
#: or None for a fixed space.
ArchLike = Architecture | str | Path | Mapping[str, Any] | np.ndarray | None


class Cost(NamedTuple):
    """FLOPS (multiply-accumulates per image) and parameter count of one network."""

    flops: int
    params: int


def summarize(space: Space, *, cost: bool = True) -> dict[str, Any]:
    """The summary `fpnas compile --json` prints (see `fpnas_dsl.summary`)."""
    from fpnas_dsl import summary

    return summary.summarize(space, cost=cost)


def architecture(space: Space, arch: ArchLike = None) -> Architecture:
    """`arch` as a readable architecture of `space`, checked against it; without `arch`,
    the one network of a fixed space (FpnasError for a space with several)."""
    from fpnas_dsl.archfile import arch_from_blocks, check_arch, read_arch_doc
    from fpnas_dsl.ir import count_networks, decode, fixed_architecture
    from fpnas_dsl.summary import count_text

    if arch is None:
        fixed = fixed_architecture(space)
        if fixed is None:
            raise FpnasError(
                f"space {space.name!r} holds {count_text(count_networks(space))} networks; "
                "pass arch= (an arch.json path, its dict, or choice indices)"
            )
        return fixed
    if isinstance(arch, Architecture):
        check_arch(space, arch, "arch")
        return arch
    if isinstance(arch, str | Path):
        # The file's blocks, read against this space (its input, not the file's).
        path = Path(arch)
        doc = read_arch_doc(path / "arch.json" if path.is_dir() else path)
        name = doc.get("space")
        return arch_from_blocks(
            space, doc["blocks"], str(path), name if isinstance(name, str) else None
        )
    if isinstance(arch, Mapping):
        if not isinstance(arch.get("blocks"), list | tuple):
            raise FpnasError("arch: not an architecture (needs a 'blocks' list)")
        name = arch.get("space")
        return arch_from_blocks(
            space, arch["blocks"], "arch", name if isinstance(name, str) else None
        )
    return decode(space, np.asarray(arch, dtype=np.int64))


def network_cost(space: Space, arch: ArchLike = None, *, count_pool: bool = False) -> Cost:
    """Exact FLOPS (multiply-accumulates) and params of one architecture of `space`."""
    from fpnas_dsl.cost import arch_cost

    return Cost(*arch_cost(space, architecture(space, arch), count_pool=count_pool))


def build_network(space: Space, arch: ArchLike = None, *, init: bool = True) -> Network:
    """The standalone `nn.Module` of one architecture (a fixed space needs none): what
    `fpnas export` writes and `fpnas train` trains; `init=False` keeps PyTorch's default
    initialisation instead of MobileNet's."""
    from fpnas_dsl.nn.network import build_network as _build

    return _build(space, architecture(space, arch), init=init)


def run_search(
    space: str | Path | Space,
    config: SearchConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    progress: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Run an FP-NAS search and return its result (`run_dir`, the architecture, its FLOPS,
    params and accuracy), as `fpnas search` does.

    `config` is a `SearchConfig`, a dict of settings, or a TOML/YAML file of them;
    keyword settings (`target_flops=`, `data=`, `epochs=`, `out=`, ... the flags of `fpnas
    search` with underscores) override it. `space` is a bundled name, a .space path, or a
    `Space` loaded from a file (its file is searched)."""
    from fpnas_dsl.search.config import SearchConfig, make_config, read_config_file
    from fpnas_dsl.search.startup import search_everywhere

    values: dict[str, Any] = {}
    if isinstance(config, SearchConfig):
        values.update(config.model_dump(exclude_none=True))
    elif isinstance(config, Mapping):
        values.update(config)
    elif config is not None:
        values.update(read_config_file(Path(config)))
    values.update(settings)
    if isinstance(space, Space):
        if not Path(space.source).is_file():
            raise FpnasError(
                f"space {space.name!r} was not loaded from a file; pass its path or name"
            )
        space = space.source
    values["space"] = str(space)
    if "target_flops" not in values and "target_latency" not in values:
        raise FpnasError(
            "missing target_flops (the FLOPS the architecture may use) or target_latency "
            "with latency_table"
        )
    # The CLI's start-up: alone, or on every rank of a script started by torchrun.
    result, _ = search_everywhere(
        lambda: make_config(values, source="run_search()"), progress=progress
    )
    return result


def export_network(
    source: str | Path | Space,
    format: Format,
    out: str | Path,
    *,
    arch: ArchLike = None,
    **options: Any,
) -> ExportReport:
    """Write a network as ONNX, TorchScript or JSON, verified against PyTorch (see
    `fpnas_dsl.export.export`, whose options `weights=`, `opset=`, `tolerance=`, `seed=`,
    `data=` pass through). `source` is what `fpnas export` takes (an arch.json, a search
    or training directory, a fixed space's name or path), or a `Space` with `arch=` (or
    without, when it is fixed)."""
    from fpnas_dsl.export import export as _export
    from fpnas_dsl.sources import Source

    if isinstance(source, Space):
        readable = architecture(source, arch)
        return _export(
            Source(Path(source.source), "space", source, readable), format, out, **options
        )
    if arch is not None:
        raise FpnasError("arch= goes with a Space; a path names its architecture itself")
    return _export(source, format, out, **options)
