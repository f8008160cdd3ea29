"""fpnas: a compiler and search engine for neural architecture search (FP-NAS).

The package's top level is the Python API (`fpnas_dsl.api`, docs/api.md): load a space,
summarise it, price an architecture, build its network, search, export. Importing it does
not import torch.
"""

from fpnas_dsl.api import (
    Architecture,
    Cost,
    Space,
    architecture,
    build_network,
    export_network,
    load_space,
    network_cost,
    parse_space,
    run_search,
    summarize,
)
from fpnas_dsl.errors import FpnasError, RunError, SpaceError
from fpnas_dsl.version import __version__

__all__ = [
    "Architecture",
    "Cost",
    "FpnasError",
    "RunError",
    "Space",
    "SpaceError",
    "__version__",
    "architecture",
    "build_network",
    "export_network",
    "load_space",
    "network_cost",
    "parse_space",
    "run_search",
    "summarize",
]
