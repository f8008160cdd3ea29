"""The compiled core (`fpnas_dsl._core`, built from core/ by `pip install .`), found wherever
this Python package was imported from.

`python -m fpnas_dsl`, `torchrun -m fpnas_dsl` and `python script.py` put the current
directory (or the script's) first on `sys.path`. Run from a clone's root, they import the
clone's `fpnas_dsl/`, which has no compiled core (the build puts it in site-packages only),
instead of the installed package. Then the core is taken from the installed distribution,
if it fits this Python; otherwise `CoreUnavailable` (an `FpnasError`, exit 2, and an
`ImportError`) says what happened and what to do. It is never reported as a bug.

Is mixing the clone's Python with an installed core safe? The Python calls the core through
the interface described by `_core.pyi` (classes, methods, constants). The installed core
is accepted only when its distribution has the same version as this package and ships a
`_core.pyi` identical to this package's, i.e. it was built with the interface this Python
expects. A change to core/ that keeps the interface (a fix inside a kernel) goes unseen:
the run then has the installed core's behaviour, as the `fpnas` command would; rebuild
with `pip install .` after changing core/.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from fpnas_dsl.errors import FpnasError

DISTRIBUTION = "fpnas"
PACKAGE = "fpnas_dsl"
MODULE = f"{PACKAGE}._core"
STUB = "_core.pyi"
#: How to run anyway, said by every message that finds the source tree shadowing an install.
REMEDY = (
    "run from another directory, or use the installed command (`fpnas ...`; under torchrun "
    "`torchrun --no-python fpnas ...`), or install this tree with `pip install .`"
)


class CoreUnavailable(FpnasError, ImportError):
    """The compiled core cannot be imported: not built, broken, or not this Python's."""


def load_core() -> ModuleType:
    """`fpnas_dsl._core`: this package's own, else the installed distribution's if it fits."""
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    here = Path(__file__).resolve().parent
    try:
        return importlib.import_module(MODULE)
    except ModuleNotFoundError as err:
        if err.name != MODULE:
            raise
    except ImportError as err:  # present but not loadable: another Python, a broken build
        raise CoreUnavailable(
            f"the compiled core in {here} cannot be loaded ({err}); rebuild it: "
            "`pip install .` in the clone"
        ) from None
    return _installed_core(here)


def _installed_core(here: Path) -> ModuleType:
    """The core of the installed distribution, for a package directory `here` without one."""
    from fpnas_dsl.version import __version__

    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    core = _core_file(dist) if dist is not None else None
    if dist is None or core is None or core.parent == here:
        raise CoreUnavailable(
            f"fpnas's compiled core is not built: {here} has no _core extension and no "
            "installed fpnas provides one; build and install it with `pip install .` from the "
            "clone's root (it needs cmake and a C++17 compiler)"
        )
    shadowing = (
        f"the fpnas Python package was imported from the source tree {here} (`python -m`, "
        "a script or PYTHONPATH put it before site-packages), which has no compiled core"
    )
    if dist.version != __version__:
        raise CoreUnavailable(
            f"{shadowing}; the installed fpnas {dist.version} at {core.parent} has one, but "
            f"for another version than this tree's {__version__}; {REMEDY}"
        )
    installed_stub, own_stub = core.parent / STUB, here / STUB
    if not (
        installed_stub.is_file()
        and own_stub.is_file()
        and installed_stub.read_bytes() == own_stub.read_bytes()
    ):
        raise CoreUnavailable(
            f"{shadowing}; the installed fpnas at {core.parent} has one, but built with "
            f"another interface ({STUB} differs from this tree's); {REMEDY}"
        )
    return _load_extension(core)


def _core_file(dist: importlib.metadata.Distribution) -> Path | None:
    """The installed distribution's compiled core for this interpreter, if it lists one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for entry in dist.files or []:
            if entry.parts == (PACKAGE, f"_core{suffix}"):
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file():
                    return path
    return None


def _load_extension(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None or spec.loader is None:
        raise CoreUnavailable(f"{path}: not a loadable extension module; {REMEDY}")
    try:
        module = importlib.util.module_from_spec(spec)  # loads the shared library
        spec.loader.exec_module(module)
    except ImportError as err:
        raise CoreUnavailable(
            f"the installed compiled core {path} cannot be loaded ({err}); {REMEDY}"
        ) from None
    sys.modules[MODULE] = module
    vars(sys.modules[PACKAGE])["_core"] = module  # as an ordinary import of a submodule does
    return module
