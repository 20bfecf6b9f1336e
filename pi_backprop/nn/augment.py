"""Augmentation: random changes to each training sample, so that a few dozen examples teach
what a camera or sensor will really see. Training only: evaluation and prediction see the
samples as they are.

    augment = Augment.from_table({"shift": 2, "noise": 0.02}, input_shape=(1, 28, 28))
    x_batch = augment.apply(x_batch, seed, step)      # (N, *input_shape) -> a new array

A batch's changes are a pure function of (seed, step, position in the batch), so that a run
stopped and resumed trains on exactly the batches an uninterrupted one does; they are drawn
and applied with numpy whatever the backend, so both backends train on the same pixels.

Images (N, C, H, W), in this order: ``rotate`` (max degrees) and ``scale`` (max relative
change) about the centre, with bilinear sampling; ``shift`` (max pixels, each axis);
``hflip`` (a mirror image half the time; off by default: text and arrows are not
symmetric); ``contrast`` (max relative change about the sample's mean); ``brightness``
(max relative change); ``noise`` (the std of added Gaussian noise). Pixels from outside
the frame repeat its edge, as a camera that moved a little would see the same background.

Sensor windows (N, L): ``time_shift`` (max samples, the edge value repeated), ``gain`` (max
relative change), ``noise``.

Each kind of change has numbers of its own, so turning one on leaves the others' as they
were. Noise is read from a table of ``NOISE_TABLE`` standard normal values (drawn once per
seed) at a random offset per sample: independent values within a sample, for a fraction of
the cost of drawing fresh ones each step. Images are changed by ``kernels().augment_images``
(a compiled pass on the numba backend, the same arithmetic in numpy on the numpy backend).
"""

import dataclasses
import math

import numpy as np

from ..exc import ConfigError
from .backend import kernels
from .engine.opcodes import AUG_KEYS, DRAW_COLUMNS

IMAGE_KEYS = {   # key -> (kind, upper bound or None), all >= 0
    "shift": (int, 64), "hflip": (bool, None), "brightness": (float, 0.99), "contrast": (float, 0.99),
    "noise": (float, 10.0), "rotate": (float, 45.0), "scale": (float, 0.5),
}
SENSOR_KEYS = {"time_shift": (int, 100_000), "gain": (float, 0.99), "noise": (float, 10.0)}
NOISE_TABLE = 1 << 16
# The streams: the data order draws from [seed, epoch], dropout from [its seed, step]; the
# augmentation's from [seed, STREAM, step] (and its noise table from [seed, STREAM, 2³² − 1]).
STREAM = 0x6175676D


@dataclasses.dataclass(frozen=True)
class Augment:
    """Validated augmentation settings for one model input shape; ``bool(augment)`` is False
    when it changes nothing."""

    settings: dict
    input_shape: tuple

    @classmethod
    def from_table(cls, table: dict | None, input_shape: tuple, where: str = "augment") -> "Augment":
        """Check an ``[augment]`` table against the model's input: image keys for (C, H, W),
        sensor keys for (L,); ``ConfigError`` naming the key otherwise."""
        table = dict(table or {})
        input_shape = tuple(input_shape)
        images = len(input_shape) == 3
        known = IMAGE_KEYS if images else SENSOR_KEYS
        settings = {}
        for key, value in table.items():
            if key not in known:
                other = SENSOR_KEYS if images else IMAGE_KEYS
                hint = (f"it applies to {'sensor windows' if images else 'images'}, and this model's input is "
                        f"{'an image' if images else f'a window of {input_shape[0]} values'}" if key in other
                        else "unknown key")
                raise ConfigError(f"{where}.{key}: {hint}; known keys: {', '.join(known)}")
            kind, upper = known[key]
            settings[key] = _checked(value, kind, upper, f"{where}.{key}")
        # In the keys' own order, whatever order the table came in (a checkpoint header sorts them)
        return cls({k: settings[k] for k in known if settings.get(k)}, input_shape)

    def __bool__(self) -> bool:
        return bool(self.settings)

    def to_table(self) -> dict:
        return dict(self.settings)

    def apply(self, x: np.ndarray, seed: int, step: int) -> np.ndarray:
        """The augmented batch of training step ``step``: x (N, *input_shape) of a float
        dtype -> a new array of the same shape and dtype (x itself when nothing is set)."""
        if not self.settings:
            return x
        draws = _Draws(seed, step, x.shape[0])
        if len(self.input_shape) == 3:
            return _images(x, self.settings, draws)
        return _windows(x, self.settings, draws)


def table_text(table: dict) -> str:
    """An augmentation table (as ``Augment.to_table`` gives it) as ``"shift=2 noise=0.02"``."""
    return " ".join(f"{key}={str(value).lower() if isinstance(value, bool) else f'{value:g}'}"
                    for key, value in table.items())


def _checked(value, kind, upper, where):
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and not (number and float(value).is_integer()):
        raise ConfigError(f"{where} must be a whole number >= 0, got {value!r}")
    if not number or not math.isfinite(value) or value < 0 or (upper is not None and value > upper):
        raise ConfigError(f"{where} must be a number from 0 to {upper:g}, got {value!r}")
    return kind(value)


class _Draws:
    """The random numbers of one step: a uniform (N, COLUMNS) matrix, a column per kind of
    change and a row per position in the batch (drawn whole whatever is set, so that each
    kind's numbers stay the same when others are turned on or off)."""

    COLUMNS = DRAW_COLUMNS

    def __init__(self, seed: int, step: int, batch: int):
        self.seed = seed
        self.u = np.random.default_rng([seed, STREAM, step]).random((batch, len(self.COLUMNS)))

    def column(self, kind: str) -> np.ndarray:
        """float64 (N,) uniform in [0, 1)."""
        return self.u[:, self.COLUMNS.index(kind)]

    def symmetric(self, kind: str, bound: float) -> np.ndarray:
        """float64 (N,) uniform in [−bound, bound)."""
        return (2 * self.column(kind) - 1) * bound

    def whole(self, kind: str, bound: int) -> np.ndarray:
        """int64 (N,) uniform in −bound..bound."""
        return np.floor(self.column(kind) * (2 * bound + 1)).astype(np.int64) - bound

    def noise(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(table, offsets): the seed's standard normal values, and int64 (N,) offsets of
        each sample's ``size`` values in it."""
        table = _noise_table(self.seed, size)
        return table, np.floor(self.column("noise") * (len(table) - size + 1)).astype(np.int64)


_TABLES = {}


def _noise_table(seed: int, size: int) -> np.ndarray:
    length = max(NOISE_TABLE, 2 * size)
    key = (seed, length)
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) > 4:
            _TABLES.clear()
        table = _TABLES[key] = np.random.default_rng([seed, STREAM, -1 % (1 << 32)]).standard_normal(length)
    return table


def _images(x: np.ndarray, settings: dict, draws: _Draws) -> np.ndarray:
    """The settings as ``kernels().augment_images``'s vector, and what it takes from numpy
    on either backend: each sample's rotation (its cosine and sine) and mean."""
    N = x.shape[0]
    vector = np.array([float(settings.get(key, 0)) for key in AUG_KEYS])
    turn = np.empty((N, 2))
    if settings.get("rotate"):
        angle = np.radians(draws.symmetric("rotate", settings["rotate"]))
        turn[:, 0], turn[:, 1] = np.cos(angle), np.sin(angle)
    else:
        turn[:, 0], turn[:, 1] = 1.0, 0.0
    mean = x.reshape(N, -1).mean(axis=1, dtype=np.float64) if settings.get("contrast") else np.zeros(N)
    return kernels().augment_images(x, draws.u, vector, turn, mean, _noise_table(draws.seed, x[0].size))


def _windows(x: np.ndarray, settings: dict, draws: _Draws) -> np.ndarray:
    """Sensor windows (N, L): small enough that numpy is the implementation on both backends."""
    N, L = x.shape
    y = x.astype(np.float64)
    if settings.get("time_shift"):
        shift = draws.whole("time_shift", settings["time_shift"])
        source = np.clip(np.arange(L)[None, :] - shift[:, None], 0, L - 1)
        y = np.take_along_axis(y, source, axis=1)
    if settings.get("gain"):
        y = y * (1 + draws.symmetric("gain", settings["gain"]))[:, None]
    if settings.get("noise"):
        table, offsets = draws.noise(L)
        y = y + settings["noise"] * table[offsets[:, None] + np.arange(L)]
    return y.astype(x.dtype)
