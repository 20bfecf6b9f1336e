"""Checkpoint files: one ``.npz`` per checkpoint, written atomically, verified on load.

File ``DIR/ckpt-<step, 8 digits>.npz`` is a plain (stored, uncompressed) zip of ``.npy``
members, readable with ``numpy.load(path, allow_pickle=False)``:

    param/<layer>.<name>   every parameter array, model dtype, the layer's shape
    optim/<buffer>         every optimizer buffer (SGD ``velocity``; Adam ``m``, ``v``),
                           model dtype, shape (num_parameters,)
    header                 uint8 (n,): UTF-8 JSON, the keys below

Header keys: ``format`` (always "pi-backprop-checkpoint"), ``format_version`` (int, 1),
``library_version`` and ``numpy_version`` (what wrote the file), ``written_at`` (UTC, ISO
8601 with "Z"), ``step`` (training steps done), ``model`` (``ModelDefinition.to_dict()``),
``dtype`` ("float32" or "float64"), ``optimizer`` ({kind, hyper, step}; its buffers are the
optim/* arrays), ``training``, ``rng``, ``data`` and ``metrics`` (dicts the trainer owns:
settings, data order, data source and position, last losses and accuracy), ``arrays``
({name: {dtype, shape, sha256}} for every array but the header) and ``sha256``.

Integrity: the header lists every array with its dtype, shape and the SHA-256 of its
``.npy`` member bytes (npy header + data, exactly as stored in the zip). ``header["sha256"]``
is the SHA-256 of the header's canonical JSON without the ``sha256`` key
(``json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``, UTF-8).
So one hash covers every byte that matters, and verifying never needs to parse an array.

Writing: a temporary ``.ckpt-*.tmp`` in the same directory, flush, fsync, ``os.replace``,
fsync of the directory; only then are checkpoints beyond the newest ``keep`` deleted.
Reading never unpickles and never allocates from a size a file declares before checking it
against the model.

Errors: ``CheckpointDamaged`` (truncated, bit-flipped, not a zip, hash mismatch: a run may
fall back to an older checkpoint) and ``CheckpointRefused`` (pickled objects, unknown format
version, a header field of the wrong kind (``header_schema``), another model, wrong shapes:
a run must stop and say so). Both are
``CheckpointError``; ``CheckpointWriteError`` is a failed write (disk full).
"""

import contextlib
import dataclasses
import datetime
import errno
import hashlib
import json
import logging
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .. import __version__
from ..exc import CheckpointDamaged, CheckpointError, CheckpointRefused, CheckpointWriteError
from ..modeldef import ModelDefinition
from .atomic import atomic_write, fsync_directory
from .header_schema import check_header
from .npfiles import SNIFF_BYTES, read_npy_header, sniff

FORMAT = "pi-backprop-checkpoint"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
DEFAULT_KEEP = 3
HEADER = "header"
NAME_PATTERN = re.compile(r"^ckpt-(\d{8,})\.npz$")
TEMP_PATTERN = re.compile(r"^\.ckpt-.*\.tmp$")
MAX_HEADER_BYTES = 1 << 20  # a real header is a few kB; refuse to read a "header" of gigabytes
_CHUNK = 1 << 20            # bytes read at a time when hashing

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """A verified checkpoint: its path and its header (a dict, keys in the module docstring)."""

    path: Path
    header: dict

    @property
    def step(self) -> int:
        return int(self.header["step"])

    @property
    def model_name(self) -> str:
        return str(self.header["model"].get("name", "?"))


def checkpoint_name(step: int) -> str:
    return f"ckpt-{int(step):08d}.npz"


def step_of(path) -> int | None:
    """The step encoded in a checkpoint file name, or None if it is not one."""
    match = NAME_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else None


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def header_digest(header: dict) -> str:
    """SHA-256 hex of the canonical JSON of ``header`` without its ``sha256`` key."""
    return hashlib.sha256(canonical_json({k: v for k, v in header.items() if k != "sha256"})).hexdigest()


def architecture(model_dict: dict) -> dict:
    """The parts of a model definition that make two models the same network."""
    return {key: model_dict.get(key) for key in ("name", "input_shape", "classes", "loss", "layers")}


# -- writing --------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file object that passes bytes on and hashes them."""

    def __init__(self, target):
        self.target = target
        self.sha256 = hashlib.sha256()

    def write(self, data):
        self.sha256.update(data)
        return self.target.write(data)


def _arrays_of(model, optimizer) -> list:
    """``[(name, array)]`` to store, sorted by name; the arrays are the live ones, not copies."""
    arrays = [(f"param/{name}", value) for name, value in model.named_parameters()]
    arrays += [(f"optim/{name}", value) for name, value in optimizer.buffers.items()]
    return sorted(arrays)


def save_checkpoint(directory, model, optimizer, step: int, *, training=None, rng=None, data=None,
                    metrics=None, keep: int = DEFAULT_KEEP) -> Path:
    """Write ``DIR/ckpt-<step>.npz`` durably, then delete all but the newest ``keep``.

    model     : ``Sequential`` built from a ``ModelDefinition`` (``model.definition`` set)
    optimizer : ``SGD`` / ``Adam`` of that model
    training, rng, data, metrics : JSON-able dicts stored in the header as they are
    Returns the path. On any failure the temporary file is removed, older checkpoints are
    untouched, and ``CheckpointWriteError`` says why (``.errno`` ENOSPC for a full disk).
    """
    directory = Path(directory)
    definition = getattr(model, "definition", None)
    if definition is None:
        raise CheckpointError("cannot checkpoint a model without a definition; build it with "
                              "ModelDefinition.build() or load_model()")
    if keep < 1:
        raise CheckpointError(f"keep must be at least 1, got {keep}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointWriteError(f"cannot create checkpoint directory {directory}: "
                                   f"{error.strerror or error}", error.errno) from None
    final = directory / checkpoint_name(step)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
        "numpy_version": np.__version__,
        "written_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "step": int(step), "model": definition.to_dict(), "dtype": model.dtype.name,
        "optimizer": {"kind": optimizer.kind, "hyper": optimizer.hyper(), "step": int(optimizer.step_count)},
        "training": training or {}, "rng": rng or {}, "data": data or {}, "metrics": metrics or {},
    }
    try:
        with atomic_write(final) as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
                listed = {}
                for name, array in _arrays_of(model, optimizer):
                    with archive.open(f"{name}.npy", "w", force_zip64=array.nbytes > (1 << 30)) as member:
                        writer = _HashingWriter(member)
                        np.lib.format.write_array(writer, array, allow_pickle=False)
                    listed[name] = {"dtype": array.dtype.str, "shape": list(array.shape),
                                    "sha256": writer.sha256.hexdigest()}
                header["arrays"] = listed
                header["sha256"] = header_digest(header)
                text = np.frombuffer(canonical_json(header), dtype=np.uint8)
                with archive.open(f"{HEADER}.npy", "w") as member:
                    np.lib.format.write_array(member, text, allow_pickle=False)
    except OSError as error:
        reason = "no space left on device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        previous = newest_file(directory, exclude=final)
        kept = f"{previous.name} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointWriteError(f"cannot write checkpoint {final}: {reason}; {kept}",
                                   error.errno) from None
    prune(directory, keep, newest=final)
    return final


def newest_file(directory, exclude=None):
    """The checkpoint file with the highest step in ``directory`` (not verified), or None."""
    files = [p for p in checkpoint_files(directory) if p != exclude]
    return files[0] if files else None


def prune(directory, keep: int, newest: Path) -> list:
    """Delete checkpoints older than ``newest`` beyond the newest ``keep`` (counting ``newest``).

    Called only once ``newest`` is durable. Files with a higher step than ``newest`` (left by an
    abandoned run) are not touched. Returns the deleted paths.
    """
    step = step_of(newest)
    older = [p for p in checkpoint_files(directory) if step_of(p) < step]
    doomed = older[keep - 1:]
    for path in doomed:
        _remove_quietly(path)
    if doomed:
        fsync_directory(directory)
    return doomed


SET_ASIDE = "rolled-back"   # the folder, inside the checkpoint directory, of files rolled back from


def set_aside(directory, after_step: int, keep: int = DEFAULT_KEEP) -> list:
    """Move the checkpoints with a step above ``after_step`` into ``directory/rolled-back/``,
    so that a restart resumes the step rolled back to; the newest ``keep`` files there are
    kept (a user may move one back), and one set aside earlier with the same step is replaced
    by the newer. Returns the new paths."""
    directory = Path(directory)
    newer = [p for p in checkpoint_files(directory) if step_of(p) > after_step]
    if not newer:
        return []
    aside = directory / SET_ASIDE
    aside.mkdir(exist_ok=True)
    moved = []
    for path in newer:
        os.replace(path, aside / path.name)
        moved.append(aside / path.name)
    fsync_directory(directory)
    for path in checkpoint_files(aside)[keep:]:
        _remove_quietly(path)
    return moved


def _remove_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        _log.warning("could not remove %s: %s", path, error.strerror or error)


# -- reading --------------------------------------------------------------------------------


def checkpoint_files(directory) -> list:
    """Checkpoint files in ``directory``, highest step first (names only, nothing verified)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if step_of(p) is not None and p.is_file()]
    return sorted(files, key=step_of, reverse=True)


def temp_files(directory) -> list:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if TEMP_PATTERN.match(p.name))


def remove_temp_files(directory) -> list:
    """Delete temporary files left by a killed write; returns their paths.

    Only call this while holding the directory for writing (see ``trainer``): another
    process's temporary file is its write in progress.
    """
    removed = temp_files(directory)
    for path in removed:
        _remove_quietly(path)
    if removed:
        fsync_directory(directory)
    return removed


def _sniff(path) -> str:
    """Why a file that is not a zip archive is not a checkpoint."""
    try:
        with open(path, "rb") as file:
            kind = sniff(file.read(SNIFF_BYTES))
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if kind == "pickle":
        raise CheckpointRefused(f"{path}: holds pickled data, refused (pickles can run code; "
                                "nothing was loaded)")
    if kind == "npy":
        raise CheckpointRefused(f"{path}: is a single .npy array, not a pi-backprop checkpoint")
    return {"empty": "is empty (a write was cut short)",
            "npz": "is truncated or damaged (its zip directory is unreadable)"}.get(
                kind, "is not a checkpoint (not a .npz zip archive)")


def _npy_header(member, name, path):
    """Read an ``.npy`` member's header; return (dtype, shape, fortran_order), never unpickling."""
    try:
        dtype, shape, fortran = read_npy_header(member)
    except (ValueError, SyntaxError, EOFError) as error:
        raise CheckpointDamaged(f"{path}: array {name!r} has an unreadable header ({error})") from None
    if dtype.hasobject:
        raise CheckpointRefused(f"{path}: array {name!r} holds pickled Python objects (dtype object), "
                                "refused (pickles can run code; nothing was loaded)")
    return dtype, shape, fortran


def _read_exactly(member, buffer: memoryview, name, path):
    view = buffer.cast("B") if buffer.format != "B" else buffer
    filled = 0
    while filled < len(view):
        count = member.readinto(view[filled:])
        if not count:
            raise CheckpointDamaged(f"{path}: array {name!r} is truncated")
        filled += count


# What zipfile/numpy raise on a mangled file: a flipped bit can turn a field into an unknown
# compression method (NotImplementedError), an "encrypted" flag (RuntimeError), a bad length...
_PARSE_ERRORS = (zipfile.BadZipFile, zlib.error, struct.error, NotImplementedError, RuntimeError,
                 ValueError, UnicodeDecodeError, EOFError, OSError, OverflowError, KeyError)


@contextlib.contextmanager
def _damage_reported(path):
    """Turn any parsing failure inside the block into ``CheckpointDamaged`` naming ``path``."""
    try:
        yield
    except CheckpointError:
        raise
    except _PARSE_ERRORS as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise CheckpointDamaged(f"{path}: unreadable zip data ({reason})") from None


def _open_archive(path):
    path = Path(path)
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CheckpointDamaged(f"{path}: {_sniff(path)}") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as error:
        raise CheckpointDamaged(f"{path}: cannot be read: {error.strerror or error}") from None


def _read_header(archive, path) -> dict:
    names = archive.namelist()
    for name in names:
        if not name.endswith(".npy"):
            raise CheckpointRefused(f"{path}: holds {name!r}, which is not a .npy array; "
                                    "not a pi-backprop checkpoint")
    if f"{HEADER}.npy" not in names:
        raise CheckpointRefused(f"{path}: has no header; not a pi-backprop checkpoint")
    info = archive.getinfo(f"{HEADER}.npy")
    if info.file_size > MAX_HEADER_BYTES:
        raise CheckpointRefused(f"{path}: header of {info.file_size} bytes is too large; "
                                "not a pi-backprop checkpoint")
    with archive.open(info) as member:
        dtype, shape, _ = _npy_header(member, HEADER, path)
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
            raise CheckpointRefused(f"{path}: header is {dtype}{list(shape)}, not uint8 text; "
                                    "not a pi-backprop checkpoint")
        text = bytearray(shape[0])
        _read_exactly(member, memoryview(text), HEADER, path)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CheckpointDamaged(f"{path}: header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointRefused(f"{path}: header does not say {FORMAT!r}; not a pi-backprop checkpoint")
    version = header.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointRefused(
            f"{path}: format version {version!r} is unknown (pi-backprop {__version__} reads "
            f"version {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade pi-backprop to read it")
    return header


def verify_checkpoint(path) -> CheckpointInfo:
    """Check a file is an intact, safe checkpoint; return its header. Reads every byte once.

    Raises ``CheckpointDamaged`` or ``CheckpointRefused`` with a one-line message naming the file.
    Nothing is allocated from the sizes the file declares.
    """
    path = Path(path)
    with _damage_reported(path), _open_archive(path) as archive:
        header = _read_header(archive, path)
        listed = header.get("arrays")
        required = ("step", "model", "dtype", "optimizer", "sha256")
        if not isinstance(listed, dict) or any(key not in header for key in required):
            raise CheckpointDamaged(f"{path}: header lacks required fields")
        if header_digest(header) != header["sha256"]:
            raise CheckpointDamaged(f"{path}: header hash mismatch")
        check_header(header, path)
        stored = {name[:-4] for name in archive.namelist()} - {HEADER}
        if stored != set(listed):
            missing = sorted(set(listed) - stored) or sorted(stored - set(listed))
            raise CheckpointDamaged(f"{path}: array {missing[0]!r} is missing or unlisted")
        for name in sorted(listed):
            digest = hashlib.sha256()
            with archive.open(f"{name}.npy") as member:
                while chunk := member.read(_CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != listed[name].get("sha256"):
                raise CheckpointDamaged(f"{path}: array {name!r} hash mismatch")
        for name in sorted(listed):
            with archive.open(f"{name}.npy") as member:
                _npy_header(member, name, path)
    return CheckpointInfo(path, header)


def check_compatible(info: CheckpointInfo, definition: ModelDefinition, dtype=None) -> None:
    """Raise ``CheckpointRefused`` if the checkpoint is for another model (architecture or dtype)."""
    stored = info.header["model"]
    if not isinstance(stored, dict):
        raise CheckpointRefused(f"{info.path}: its model definition is unreadable")
    mine = architecture(definition.to_dict())
    theirs = architecture(stored)
    if theirs != mine:
        if theirs["name"] != mine["name"]:
            what = f"is for model {theirs['name']!r}, not {mine['name']!r}"
        else:
            differing = [k for k in mine if mine[k] != theirs[k]]
            what = f"is for a different {mine['name']!r} model ({', '.join(differing)} differ)"
        raise CheckpointRefused(f"{info.path}: {what}; use another --checkpoint-dir or the model it was made with")
    if dtype is not None and info.header["dtype"] != np.dtype(dtype).name:
        raise CheckpointRefused(f"{info.path}: parameters are {info.header['dtype']}, "
                                f"the model uses {np.dtype(dtype).name}")


def load_into(info: CheckpointInfo, model, optimizer) -> None:
    """Copy a verified checkpoint's parameters and optimizer state into ``model`` and ``optimizer``.

    Every array's dtype and shape are checked against the model before any byte is read into
    it, and the bytes go straight into the model's own arrays (no second copy in memory).
    If the file changed since ``verify_checkpoint`` and turns out bad, the model is left
    partly loaded and ``CheckpointDamaged`` is raised: rebuild or restore another before use.
    """
    path, header = info.path, info.header
    check_compatible(info, model.definition, model.dtype)
    state = header["optimizer"]
    if not isinstance(state, dict) or state.get("kind") != optimizer.kind:
        kind = state.get("kind") if isinstance(state, dict) else None
        raise CheckpointRefused(f"{path}: optimizer state is for {kind!r}, not {optimizer.kind!r}")
    expected = dict(_arrays_of(model, optimizer))
    listed = header["arrays"]
    if set(listed) != set(expected):
        extra = sorted(set(listed) ^ set(expected))
        raise CheckpointRefused(f"{path}: array {extra[0]!r} does not fit the model "
                                f"({'missing' if extra[0] in expected else 'unexpected'})")
    with _damage_reported(path), _open_archive(path) as archive:
        for name, target in sorted(expected.items()):
            with archive.open(f"{name}.npy") as member:
                dtype, shape, fortran = _npy_header(member, name, path)
                if tuple(shape) != target.shape:
                    raise CheckpointRefused(f"{path}: array {name!r} has shape {tuple(shape)}, "
                                            f"the model needs {target.shape}")
                if dtype != target.dtype or fortran:
                    raise CheckpointRefused(f"{path}: array {name!r} is {dtype.str}"
                                            f"{' (Fortran order)' if fortran else ''}, "
                                            f"the model needs {target.dtype.str}")
                _read_exactly(member, memoryview(target.reshape(-1)), name, path)
    # The buffers were read into the optimizer's own arrays above: no second copy in memory.
    optimizer.load_state_dict({"kind": optimizer.kind, "hyper": state.get("hyper", {}), "step": state["step"],
                               "buffers": optimizer.buffers})


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """The newest usable checkpoint of a directory, and the newer files that were skipped."""

    latest: CheckpointInfo | None
    skipped: list       # [(path, reason)] for damaged files newer than ``latest``
    files: int          # checkpoint files seen


def find_latest(directory, definition: ModelDefinition | None = None, dtype=None, *,
                at_most: int | None = None) -> ScanResult:
    """The newest intact checkpoint in ``directory`` that fits ``definition`` (and whose step
    is at most ``at_most``, if given).

    Damaged files are skipped with a warning naming the file and why. A refused file (pickled,
    unknown version, another model) raises ``CheckpointRefused``: it means the directory is
    not this run's. Files exist but none is intact: ``CheckpointError``.
    """
    files = [p for p in checkpoint_files(directory) if at_most is None or step_of(p) <= at_most]
    skipped = []
    for path in files:
        try:
            info = verify_checkpoint(path)
        except CheckpointDamaged as error:
            reason = str(error).removeprefix(f"{path}: ")
            _log.warning("skipping damaged checkpoint %s: %s", path, reason)
            skipped.append((path, reason))
            continue
        if definition is not None:
            check_compatible(info, definition, dtype)
        return ScanResult(info, skipped, len(files))
    if files:
        reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped[:3])
        raise CheckpointError(f"no intact checkpoint in {directory}, all {len(files)} are damaged "
                              f"({reasons}); move them away to start afresh")
    return ScanResult(None, skipped, 0)
