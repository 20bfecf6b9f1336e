"""Writing a file so that a power cut leaves either the old file or the new one, whole.

A temporary file in the same directory (so the rename cannot cross file systems), flushed
and fsynced, renamed over the target, and the directory fsynced so that the rename itself
survives. The temporary file is named ``.<stem>.<random>.tmp``: a reader of the directory
can recognise (and remove) what a cut-short write left behind.
"""

import contextlib
import errno
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path, *, mode: int = 0o644):
    """``with atomic_write(path) as file:`` write binary data to ``file``; on a clean exit it
    replaces ``path`` durably. On any error the temporary file is removed, ``path`` is as it
    was, and the error (an ``OSError`` for a full or failing disk) propagates.

    mode : the new file's permission bits (mkstemp's 0600 would hide it from other readers).
    """
    path = Path(path)
    directory = path.parent
    fd, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_directory(directory)


def fsync_directory(directory) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        # Some filesystems (and Windows) cannot fsync a directory; anything else is real.
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
