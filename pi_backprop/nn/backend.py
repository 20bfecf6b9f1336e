"""The kernel backend: ``"numpy"`` (the readable reference) or ``"numba"`` (compiled).

Both backends are modules with the same functions (``kernels_numpy``, ``engine.layer_kernels``); layers call
``kernels()`` on every forward/backward, so switching takes effect at once. numba is
imported only when its backend is first used, never by ``import pi_backprop``.
"""

import importlib
import logging
import os
from types import ModuleType

from ..exc import BackendError

BACKENDS = ("numba", "numpy")
_MODULES = {"numba": ".engine.layer_kernels", "numpy": ".kernels_numpy"}
ENV_VAR = "PI_BACKPROP_BACKEND"

_log = logging.getLogger(__name__)
current = None  # the backend in use once chosen (read it; set_backend() changes it)
_modules = {}


def numba_available() -> bool:
    """True when numba imports on this machine (imports it, once)."""
    try:
        _load("numba")
    except BackendError:
        return False
    return True


def set_backend(name: str) -> None:
    """Use backend ``name`` ("numba" or "numpy") from now on.

    Raises ``BackendError`` for an unknown name, or for "numba" where it is not installed.
    """
    global current
    _load(_checked_name(name, "set_backend"))
    current = name


def get_backend() -> str:
    """The backend in use; on first call ``$PI_BACKPROP_BACKEND``, else numba if it imports."""
    global current
    if current is None:
        requested = os.environ.get(ENV_VAR)
        if requested:
            _load(_checked_name(requested, ENV_VAR))
            current = requested
        elif numba_available() and _caching():
            current = "numba"
        elif numba_available():
            _log.warning("no kernel cache can be written: using the numpy backend (same results; numba would "
                         "compile anew in every process; set NUMBA_CACHE_DIR to a writable folder, or ask for it "
                         "with --backend numba)")
            current = "numpy"
        else:
            _log.warning("numba is not installed: using the numpy backend (same results, slower)")
            current = "numpy"
    return current


def _caching() -> bool:
    """The numba backend can keep its compiled kernels (``engine.jit.CACHING``)."""
    from .engine import jit

    return jit.CACHING


def kernels(name: str | None = None) -> ModuleType:
    """The kernel module of backend ``name`` (default: the one in use)."""
    return _load(name or get_backend())


def _checked_name(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise BackendError(f"{where}: unknown backend {name!r}; choose 'numba' or 'numpy'")
    return name


def _load(name: str) -> ModuleType:
    module = _modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(_MODULES[name], __package__)
        except ImportError as error:
            raise BackendError(
                f"backend {name!r} cannot be loaded ({error}); install numba "
                "(pip install numba) or use the numpy backend (PI_BACKPROP_BACKEND=numpy)"
            ) from None
        _modules[name] = module
    return module
