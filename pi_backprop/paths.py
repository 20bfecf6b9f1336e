"""Where pi-backprop keeps things on disk.

State (sample store, checkpoints, reports) lives under one directory: systemd's
``$STATE_DIRECTORY`` when run as a service, else ``$XDG_STATE_HOME/pi-backprop``
(``~/.local/state/pi-backprop``). Compiled numba kernels go under ``$CACHE_DIRECTORY``
or ``$XDG_CACHE_HOME/pi-backprop`` (``~/.cache/pi-backprop``).
"""

import os
from pathlib import Path


def _first(env_value):
    # systemd passes a colon-separated list when a unit names several directories.
    return env_value.split(":")[0] if env_value else None


def state_dir() -> Path:
    """The state directory (not created here)."""
    systemd = _first(os.environ.get("STATE_DIRECTORY"))
    if systemd:
        return Path(systemd)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "pi-backprop"


def cache_dir() -> Path:
    """The cache directory for compiled kernels (not created here)."""
    systemd = _first(os.environ.get("CACHE_DIRECTORY"))
    if systemd:
        return Path(systemd)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pi-backprop"


def numba_cache_dir() -> Path:
    """``$NUMBA_CACHE_DIR`` if set, else ``cache_dir()/numba``."""
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    return Path(explicit) if explicit else cache_dir() / "numba"
