"""What went wrong with a file on the card, in one line: a full disk, a lock another process
holds, a damaged database. The store turns each ``sqlite3.Error`` into the matching
``exc.DataError`` subclass here, so that callers decide by type and users read one true line.

    try: ...
    except sqlite3.Error as error:
        raise store_error(error, path, "store a sample") from error
"""

import os
import shutil
import sqlite3
from pathlib import Path

from ..budget import size_text
from ..exc import DataError, StoreCorruptError, StoreFullError, StoreLockedError

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = \
    5, 6, 10, 11, 13, 14, 26
NEARLY_FULL = 1 << 20   # bytes free below which an I/O error is taken for a full disk (SQLite's -shm)


def store_error(error: sqlite3.Error, path: Path, doing: str, *, busy_seconds: float | None = None) -> DataError:
    """The one-line ``DataError`` (a subclass where one fits) for ``error`` raised while
    ``doing`` something ("store a sample") with the store at ``path``."""
    code = primary_code(error)
    if code == SQLITE_FULL or "disk is full" in str(error) or (code == SQLITE_IOERR and _nearly_full(path)):
        return StoreFullError(f"cannot {doing}: the disk holding {path} is full ({free_text(path)})")
    if code in (SQLITE_BUSY, SQLITE_LOCKED) or "database is locked" in str(error):
        held = f" for more than {busy_seconds:.0f} s" if busy_seconds else ""
        return StoreLockedError(f"cannot {doing}: {path} is locked by {lock_holders_text(path)}{held}")
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB) or "malformed" in str(error):
        return StoreCorruptError(f"cannot {doing}: {path} is damaged ({error}); "
                                 f"pi-backprop data check --repair --db {path} salvages what can be read")
    return DataError(f"cannot {doing}: {path}: {error}")


def _nearly_full(path: Path) -> bool:
    free = free_bytes(path)
    return free is not None and free < NEARLY_FULL


def primary_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``error`` (SQLITE_FULL, ...), or None if it has none."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def free_bytes(path: Path) -> int | None:
    """Bytes free for this user on the file system that holds ``path`` (its nearest existing
    parent), or None if that cannot be read."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def free_text(path: Path) -> str:
    free = free_bytes(path)
    return "free space unknown" if free is None else f"{size_text(free)} free"


def lock_holders(path: Path) -> list[tuple[int, str]]:
    """(pid, command name) of the other processes that have the store (or its -wal/-shm
    file) open, as far as this user may see them in /proc (Linux); [] elsewhere."""
    path = Path(path)
    try:
        names = {str(p.resolve()) for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))}
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit() and int(entry) != os.getpid()]
    except OSError:
        return []
    holders = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in names for fd in fds):
                with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
                    holders.append((int(pid), comm.read().strip()))
        except OSError:   # gone meanwhile, or another user's
            continue
    return sorted(holders)


def lock_holders_text(path: Path) -> str:
    holders = lock_holders(path)
    if not holders:
        return "another process"
    return "another process (" + ", ".join(f"pid {pid} {name}" for pid, name in holders[:3]) + ")"
