"""Data sets for training: labelled samples held in memory, checked against the model once.

``open_dataset(spec, definition)`` understands:

    data.npz                 arrays ``x`` (N, *input_shape) and ``y`` (N,) int labels; an
                             optional ``classes`` string array must match the model's classes
    samples.db / .sqlite     a sample store (``pi_backprop.storage.store``), with its own split
    sim:sensor, sim:camera   simulated sources; options as a query: ``sim:camera?n=2000&seed=1``

A ``Dataset`` keeps ``x`` once (float32, or the model dtype) and hands out batches by index;
which samples are held out for evaluation is a pure function of the sample index (a hash),
so it does not change when a store grows or the training seed changes.
"""

import dataclasses
import hashlib
import logging
import urllib.parse
from pathlib import Path

import numpy as np

from ..exc import DataError
from ..storage.npfiles import load_numpy
from ..storage.split import VALIDATION_FRACTION, validation_mask

SIM_DEFAULT_SIZE = {"sensor": 2048, "camera": 2048}
SIM_MAX_SIZE = 200_000
STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

_log = logging.getLogger(__name__)


def held_out_mask(n: int, fraction: float = VALIDATION_FRACTION) -> np.ndarray:
    """bool (n,): True for the samples held out for evaluation.

    The sample store's rule (``storage.split``) with positions as ids: sample ``i`` stays
    on its side of the split as data is added, and blocks of eight consecutive samples
    (frames captured a moment apart) stay on one side together.
    """
    return validation_mask(np.arange(n), fraction)


@dataclasses.dataclass
class Dataset:
    """Labelled samples for one model.

    x          : float (N, *input_shape), the model's dtype, C-contiguous
    y          : int64 (N,), class indices in [0, classes)
    source     : what it was read from, e.g. ``"sim:sensor"`` or a path
    train_index, eval_index : intp arrays of sample indices, disjoint, train non-empty
    fingerprint : SHA-256 hex of x and y, to notice data that changed between runs
    """

    x: np.ndarray
    y: np.ndarray
    source: str
    train_index: np.ndarray
    eval_index: np.ndarray
    fingerprint: str

    @classmethod
    def from_arrays(cls, x, y, definition, source="arrays", eval_mask=None, dtype=np.float32) -> "Dataset":
        """Validate ``x``, ``y`` against ``definition`` and split them.

        x         : (N, *input_shape) numbers; (N, H, W) is accepted for a one-channel model;
                    uint8 images are scaled to [0, 1]
        y         : (N,) integer labels in [0, len(classes))
        eval_mask : bool (N,) held-out samples, default ``held_out_mask(N)``
        Raises ``DataError`` naming the problem in one line.
        """
        x = _check_x(x, definition, source, dtype)
        y = _check_y(y, len(x), definition, source)
        if eval_mask is None:
            eval_mask = held_out_mask(len(x))
        eval_mask = np.asarray(eval_mask, dtype=bool)
        if eval_mask.shape != (len(x),):
            raise DataError(f"{source}: held-out mask of shape {eval_mask.shape} for {len(x)} samples")
        train_index = np.flatnonzero(~eval_mask)
        eval_index = np.flatnonzero(eval_mask)
        if len(train_index) == 0:
            # Too few samples to hold any out: train on all, evaluate on nothing.
            train_index, eval_index = np.arange(len(x)), np.arange(0)
        digest = hashlib.sha256()
        digest.update(repr((x.shape, x.dtype.str, y.shape)).encode())
        digest.update(memoryview(x).cast("B"))
        digest.update(memoryview(y).cast("B"))
        return cls(x, y, source, train_index, eval_index, digest.hexdigest())

    def __len__(self):
        return len(self.x)

    def describe(self) -> dict:
        """JSON-able summary for checkpoint headers."""
        return {"source": self.source, "fingerprint": self.fingerprint, "samples": len(self.x),
                "train": int(len(self.train_index)), "held_out": int(len(self.eval_index))}


def _check_x(x, definition, source, dtype):
    x = np.asarray(x)
    shape = tuple(definition.input_shape)
    if x.dtype.hasobject or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{source}: x must be numeric, got dtype {x.dtype}")
    if x.ndim == len(shape) and len(shape) == 3 and shape[0] == 1:
        x = x[:, None]                      # (N, H, W) grey images for a one-channel model
    if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
        want = ", ".join(map(str, shape))
        raise DataError(f"{source}: x has shape {x.shape}, model {definition.name!r} needs (N, {want})")
    if len(x) == 0:
        raise DataError(f"{source}: holds no samples")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{source}: x must be real numbers, got dtype {x.dtype}")
    if x.dtype == np.uint8:
        x = np.multiply(x, np.float32(1 / 255), dtype=dtype)
    else:
        x = np.ascontiguousarray(x, dtype=dtype)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{source}: sample {bad} of x holds NaN or inf ({int((~finite).sum())} such samples)")
    return x


def _check_y(y, n, definition, source):
    y = np.asarray(y)
    classes = len(definition.classes)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source}: y has shape {y.shape}, expected ({n},) labels, one per sample of x")
    if not np.issubdtype(y.dtype, np.integer):
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise DataError(f"{source}: y must hold integer class labels, got dtype {y.dtype}")
    bad = (y < 0) | (y >= classes)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: label {int(y[index])} of sample {index} is out of range; "
                        f"model {definition.name!r} has {classes} classes (0..{classes - 1})")
    return np.ascontiguousarray(y, dtype=np.int64)


# -- sources --------------------------------------------------------------------------------


def open_dataset(spec, definition, dtype=np.float32) -> Dataset:
    """A ``Dataset`` for ``definition`` from ``spec`` (a path or ``sim:<kind>[?n=N&seed=S]``)."""
    spec = str(spec)
    if spec.startswith("sim:"):
        return _simulated(spec, definition, dtype)
    path = Path(spec)
    if path.suffix.lower() in STORE_SUFFIXES:
        return _from_store(path, definition, dtype)
    if path.suffix.lower() == ".npz":
        return _from_npz(path, definition, dtype)
    raise DataError(f"data {spec!r} is not understood; give a .npz file (arrays x, y), a sample "
                    f"store ({', '.join(STORE_SUFFIXES)}), sim:sensor or sim:camera")


def _from_npz(path, definition, dtype):
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    arrays = load_numpy(path, "npz")
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: has no array {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    x, y = arrays["x"], arrays["y"]
    # "class_names" is what `pi-backprop data export` writes; "classes" is accepted too.
    classes = arrays.get("class_names", arrays.get("classes"))
    if classes is not None:
        names = [str(c) for c in np.asarray(classes).ravel()]
        if names != list(definition.classes):
            raise DataError(f"{path}: its classes {names} differ from model {definition.name!r}'s "
                            f"{list(definition.classes)}")
    return Dataset.from_arrays(x, y, definition, source=str(path), dtype=dtype)


def _simulated(spec, definition, dtype):
    kind, _, query = spec[4:].partition("?")
    if kind not in SIM_DEFAULT_SIZE:
        raise DataError(f"data {spec!r}: unknown simulated source {kind!r}; choose sim:sensor or sim:camera")
    options = {"n": SIM_DEFAULT_SIZE[kind], "seed": 0}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if key not in options:
            raise DataError(f"data {spec!r}: unknown option {key!r}; known options: n, seed")
        try:
            options[key] = int(values[-1])
        except ValueError:
            raise DataError(f"data {spec!r}: {key} must be an integer, got {values[-1]!r}") from None
    if not 1 <= options["n"] <= SIM_MAX_SIZE:
        raise DataError(f"data {spec!r}: n must be between 1 and {SIM_MAX_SIZE}, got {options['n']}")
    from ..hardware import simulated

    shape = tuple(definition.input_shape)
    try:
        if kind == "sensor":
            if len(shape) != 1:
                raise DataError(f"sim:sensor gives vectors, but model {definition.name!r} takes images "
                                f"{shape}; use sim:camera")
            x, y = simulated.sensor_dataset(options["n"], options["seed"], shape[0], definition.classes)
        else:
            if len(shape) != 3:
                raise DataError(f"sim:camera gives images, but model {definition.name!r} takes vectors "
                                f"{shape}; use sim:sensor")
            x, y = simulated.camera_dataset(options["n"], options["seed"], shape, definition.classes)
    except DataError:
        raise
    except ValueError as error:  # e.g. class names the simulator cannot draw
        raise DataError(f"data {spec!r} does not fit model {definition.name!r}: {error}") from None
    return Dataset.from_arrays(x, y, definition, source=spec, dtype=dtype)


def _from_store(path, definition, dtype):
    """A sample-store database, with the store's own stable split (read-only: safe while
    the service writes to it)."""
    if not path.is_file():
        raise DataError(f"sample store {str(path)!r} does not exist")
    from ..storage.store import read_dataset  # sqlite3 only when a store is asked for

    x, y, eval_mask = read_dataset(path, tuple(definition.classes), tuple(definition.input_shape))
    return Dataset.from_arrays(x, y, definition, source=str(path), eval_mask=eval_mask, dtype=dtype)
