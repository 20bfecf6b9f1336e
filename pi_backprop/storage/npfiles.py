"""Reading a user's ``.npy`` / ``.npz`` file: never unpickles, and when a file is not what
was asked for, says in one line what it is instead (``np.load`` calls any unknown file a
pickle). Every array's header is read first: a file whose arrays would take more memory
than the budget (``budget``) is refused before anything is allocated, whatever its size on
disk (a zip bomb is a few megabytes; a header may claim terabytes).
"""

import math
import zipfile
from pathlib import Path

import numpy as np

from .. import budget
from ..exc import DataError

MAGIC = {"npy": b"\x93NUMPY", "npz": b"PK"}
SNIFF_BYTES = 8  # enough to tell the kinds below apart


def sniff(start: bytes) -> str:
    """What a file's first ``SNIFF_BYTES`` say it is: "empty", "pickle" (protocol 2 to 5),
    "npy", "npz" (any zip archive) or "other". The one place files are told apart by their
    first bytes (users' arrays here, checkpoints in ``checkpoint``)."""
    if not start:
        return "empty"
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    for kind, magic in MAGIC.items():
        if start.startswith(magic):
            return kind
    return "other"


_WHAT = {"empty": "it is empty", "pickle": "it holds pickled Python data, refused: pickles can run code",
         "npy": "it is a single .npy array", "npz": "it is a zip archive, as .npz files are",
         "other": "its first bytes are neither numpy's nor zip's"}


def read_npy_header(stream) -> tuple[np.dtype, tuple, bool]:
    """(dtype, shape, fortran_order) from the header of the ``.npy`` data at ``stream``'s
    position; never unpickles. ``ValueError`` (or ``EOFError``) if it is not one."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"npy format version {version} is not supported")
    return dtype, shape, fortran


def declared_bytes(path: Path, kind: str) -> int:
    """What the arrays of a ``.npy``/``.npz`` take once loaded and made float32 (the itemsize
    of each plus 4 bytes per element), read from their headers alone."""
    with open(path, "rb") as file:
        if kind == "npy":
            headers = [read_npy_header(file)]
        else:
            with zipfile.ZipFile(file) as archive:
                headers = []
                for name in archive.namelist():
                    with archive.open(name) as member:
                        headers.append(read_npy_header(member))
    return sum(math.prod(shape) * (dtype.itemsize + 4) for dtype, shape, _ in headers)


def load_numpy(path, kind: str):
    """The array of a ``.npy`` (``kind="npy"``) or ``{name: array}`` of a ``.npz`` (``"npz"``).

    Raises ``DataError`` naming the file and the problem: missing, unreadable, another kind
    of file, object arrays (which would need pickle), damaged.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            start = file.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read: {error.strerror or error}") from None
    found = sniff(start)
    if found != kind:
        raise DataError(f"{path}: is not a .{kind} file ({_WHAT[found]})")
    try:
        budget.refuse_over(declared_bytes(path, kind), f"{path}: its arrays", DataError)
        loaded = np.load(path, allow_pickle=False)
        if kind == "npy":
            return loaded
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except DataError:
        raise
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise DataError(f"{path}: holds pickled Python objects, refused (pickles can run code); "
                            "save plain numeric arrays") from None
        raise DataError(f"{path}: cannot be read as .{kind} ({error})") from None
    except (OSError, EOFError, SyntaxError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as error:
        raise DataError(f"{path}: cannot be read as .{kind} ({error})") from None
