"""Where numba keeps the engine's compiled code: a folder keyed by the engine's sources.

numba checks a cached function against its own file's time stamp only. The engine's entry
point inlines and links kernels from other files, so an edit to a callee (or a ``git pull``,
or a wheel upgrade) could leave stale machine code in use. Here every source file of this
package, and the Python, numpy and numba versions, go into a hash that names the folder:
any change compiles afresh into a new folder, and old folders are pruned.

    <base>/kernels-<key>/      base: $NUMBA_CACHE_DIR, else paths.cache_dir()/numba

Where that base cannot be written (a locked-down user whose HOME is read-only, no
``NUMBA_CACHE_DIR``), ``choose`` falls back to a folder private to this user in the
temporary directory, ``<tmp>/pi-backprop-<uid>/numba``, used only if this user owns it and
no one else may write to it (compiled code from a folder another user can write to would
run as ours). If even that fails nothing is cached: the numba backend then compiles anew
in every process, and the backend chooses numpy unless asked for numba.
"""

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from ...paths import numba_cache_dir

PREFIX = "kernels-"
KEY_LENGTH = 16                   # hex digits of the SHA-256
_KEYED = re.compile(rf"^{PREFIX}[0-9a-f]{{{KEY_LENGTH}}}$")
# 0.1 let numba pick the folder: <base>/nn_<sha1 of the source folder>/, holding the index
# (.nbi) and code (.nbc) files of its two kernel modules. Removed once a keyed folder is in use.
_LEGACY = re.compile(r"^nn_[0-9a-f]{40}$")
_LEGACY_MODULES = ("kernels_fused.", "kernels_numba.")
OTHERS_KEPT = 1                   # another install (a second venv, say) may share the base
SOURCES_DIR = Path(__file__).resolve().parent

_log = logging.getLogger(__name__)


def numba_version() -> str | None:
    """The installed numba's version, read without importing it; None if not installed."""
    try:
        return metadata.version("numba")
    except metadata.PackageNotFoundError:
        return None


def source_files(directory=SOURCES_DIR) -> list:
    """Every ``.py`` file numba may compile code from: the whole engine package, sorted."""
    return sorted(p for p in Path(directory).rglob("*.py") if p.is_file() and not p.name.startswith("."))


def cache_key(numba_version: str, directory=SOURCES_DIR) -> str:
    """KEY_LENGTH hex digits of a SHA-256 over the engine's sources (names and bytes) and
    the Python, numpy and numba versions."""
    digest = hashlib.sha256()
    directory = Path(directory)
    for path in source_files(directory):
        data = path.read_bytes()
        name = path.relative_to(directory).as_posix()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    digest.update(f"python {sys.version}\0numpy {np.__version__}\0numba {numba_version}".encode())
    return digest.hexdigest()[:KEY_LENGTH]


def kernel_cache_dir(numba_version: str, base=None) -> Path | None:
    """``<base>/kernels-<key>`` for this engine (not created here); None, after one warning,
    if an engine source cannot be read (then nothing may be cached)."""
    try:
        key = cache_key(numba_version)
    except OSError as error:
        _log.warning("cannot read the engine's source %s (%s): kernels compile anew in every process",
                     error.filename, error.strerror or error)
        return None
    return Path(base or numba_cache_dir()) / f"{PREFIX}{key}"


@dataclasses.dataclass(frozen=True)
class CacheChoice:
    """The kernel cache folder to use (None: cache nothing), and why not the usual one
    (``wanted``, ``problem``) where it fell back."""

    directory: Path | None
    wanted: Path | None = None
    problem: str | None = None

    @property
    def text(self) -> str:
        """For ``pi-backprop info`` and the warning: where, and why there."""
        if self.problem is None:
            return str(self.directory) if self.directory else "none: kernels compile anew in every process"
        if self.directory is None:
            return f"none: {self.wanted} {self.problem} and no private folder could be made; kernels compile " \
                   "anew in every process (set NUMBA_CACHE_DIR to a writable folder)"
        return f"{self.directory} ({self.wanted} {self.problem}; this private folder is emptied at reboot: " \
               "set NUMBA_CACHE_DIR to a writable folder to keep the kernels)"


def choose(numba_version: str) -> CacheChoice:
    """The folder the engine caches its kernels in: the keyed folder under the usual base if
    it can be written, else one under this user's private temporary folder, else none.
    Creates and prunes it (``prepare``); says nothing (the caller warns with ``.text``)."""
    wanted = kernel_cache_dir(numba_version)
    if wanted is None:   # kernel_cache_dir has said why
        return CacheChoice(None)
    problem = _writable(wanted)
    if problem is None:
        prepare(wanted)
        return CacheChoice(wanted)
    private = private_base()
    fallback = None if private is None else private / wanted.name
    if fallback is not None and _writable(fallback) is None:
        prepare(fallback)
        return CacheChoice(fallback, wanted, problem)
    return CacheChoice(None, wanted, problem)


def private_base() -> Path | None:
    """``<tmp>/pi-backprop-<uid>/numba``, created private (0700) if missing; None unless this
    user owns the top folder and no one else may write to it."""
    top = Path(tempfile.gettempdir()) / f"pi-backprop-{os.getuid()}"
    try:
        top.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(top)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        _log.debug("%s is not a private folder of this user: not used for kernels", top)
        return None
    return top / "numba"


def _writable(directory: Path) -> str | None:
    """None if ``directory`` (created here) can be written, else why not ("is not writable
    (Read-only file system)")."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as error:
        return f"is not writable ({error.strerror or error})"
    return None


def prepare(directory: Path) -> bool:
    """Create ``directory``, mark it used (its time stamp), and remove older keyed folders
    beside it but the OTHERS_KEPT most recently used. False (after one warning) when it
    cannot be written: then the caller must not cache at all, for numba would fall back to
    an unkeyed folder of its own."""
    problem = _writable(directory)
    if problem is not None:
        _log.warning("kernel cache %s %s: kernels compile anew in every process", directory, problem)
        return False
    with contextlib.suppress(OSError):
        os.utime(directory)
    try:
        others = [p for p in directory.parent.iterdir()
                  if p != directory and _KEYED.match(p.name) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return True
    others.sort(key=_last_used, reverse=True)
    for stale in others[OTHERS_KEPT:] + _legacy_folders(directory.parent):
        shutil.rmtree(stale, ignore_errors=True)
        _log.info("removed the stale kernel cache %s", stale)
    return True


def _legacy_folders(base):
    """0.1's unkeyed cache folders in ``base``: named as numba names them, holding only numba
    files of 0.1's kernel modules (another project's folders beside them are left alone)."""
    found = []
    try:
        folders = list(base.iterdir())
    except OSError:
        return found
    for folder in folders:
        if not (_LEGACY.match(folder.name) and folder.is_dir() and not folder.is_symlink()):
            continue
        try:
            files = list(folder.iterdir())
        except OSError:
            continue
        if files and all(f.suffix in (".nbi", ".nbc") and f.name.startswith(_LEGACY_MODULES) for f in files):
            found.append(folder)
    return found


def _last_used(path):
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
