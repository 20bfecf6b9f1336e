"""scikit-learn's handwritten digits as the camera would give them, and few-shot draws from them.

The data: 1797 grey 8×8 images (ink 0..16), ten classes, bundled with scikit-learn (no
download). Each becomes a uint8 frame (0..16 scaled to 0..255) and goes through the camera
path's own ``hardware.preprocess.frame_to_input``: area-resized to the model's input shape,
float32 CHW in [0, 1]. The study trains and tests on what a camera model would be given.

A second test set, ``moved_and_relit``, is the held-out images as a camera that moved and
whose light changed would see them, by arithmetic of its own (not the training
augmentation's): what a Pi on a shelf meets the day after it was taught.

The split: ``TEST_SIZE`` images held out by ``SPLIT_SEED``, the same for every k, seed and
method; each draw takes k per class from the rest. A draw is a pure function of (seed, k),
and draws of one seed are nested (the k = 5 samples are among the k = 10 ones), so a curve
over k is not blurred by a new sample at every point.
"""

import dataclasses

import numpy as np

from ..exc import ConfigError
from ..hardware.preprocess import frame_to_input

SKLEARN_HINT = ("the small-data study needs scikit-learn (the digits data and the baselines): "
                "pip install 'pi-backprop[study]'")
TEST_SIZE = 700
SPLIT_SEED = 14
DRAW_STREAM = 0x5D  # keeps draw(seed) apart from the weights and data order of the same seed
INK_MAX = 16        # the digits' ink values are 0..16
MOVED_STREAM = 0x6D76   # the moved and re-lit test set's own stream
# How far the moved and re-lit test set goes: degrees, relative size, whole pixels; the gain,
# offset and the ramp across the frame of its light
MOVED = {"rotate": 10.0, "scale": 0.1, "shift": 3, "gain": [0.6, 1.4], "offset": 0.1, "ramp": 0.2}


def sklearn_module(name: str):
    """``sklearn.<name>``, or ``ConfigError`` naming the extra when scikit-learn is missing."""
    import importlib

    try:
        return importlib.import_module(f"sklearn.{name}")
    except ImportError as error:
        if (error.name or "").split(".")[0] in ("sklearn", "scipy"):
            raise ConfigError(SKLEARN_HINT) from None
        raise


@dataclasses.dataclass(frozen=True)
class Digits:
    """The digits as model inputs, split once.

    x          : float32 (1797, C, H, W) in [0, 1], the camera path's output
    y          : int64 (1797,) labels 0..9
    test_index : intp (TEST_SIZE,) held-out images, sorted
    pool_index : intp (rest,) the images draws are taken from, sorted; disjoint from test_index
    split_seed : the seed that chose test_index
    """

    x: np.ndarray
    y: np.ndarray
    test_index: np.ndarray
    pool_index: np.ndarray
    split_seed: int

    @property
    def classes(self) -> int:
        return int(self.y.max()) + 1

    def draw(self, k: int, seed: int) -> np.ndarray:
        """intp (k · classes,): k images of each class from the pool, sorted by class.

        A pure function of (k, seed); for one seed, draw(k) holds draw(k') for every k' < k.
        """
        rng = np.random.default_rng([DRAW_STREAM, seed])
        chosen = []
        for label in range(self.classes):
            members = self.pool_index[self.y[self.pool_index] == label]
            if not 1 <= k <= len(members):
                raise ConfigError(f"k must be between 1 and {self.fewest_per_class()} (images per class "
                                  f"outside the {len(self.test_index)} held out), got {k}")
            chosen.append(rng.permutation(members)[:k])   # the whole order first: nested over k
        return np.concatenate(chosen)

    def fewest_per_class(self) -> int:
        return int(np.bincount(self.y[self.pool_index], minlength=self.classes).min())


def frames() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (1797, 8, 8) grey frames 0..255 and int64 (1797,) labels."""
    data = sklearn_module("datasets").load_digits()
    images = np.round(data.images * (255 / INK_MAX)).astype(np.uint8)
    return images, data.target.astype(np.int64)


def load(input_shape, *, test_size: int = TEST_SIZE, split_seed: int = SPLIT_SEED) -> Digits:
    """The digits enlarged to ``input_shape`` (C, H, W) by the camera pipeline, split."""
    images, y = frames()
    if not 1 <= test_size < len(y):
        raise ConfigError(f"test size must be between 1 and {len(y) - 1}, got {test_size}")
    x = frame_to_input(images, tuple(input_shape))
    order = np.random.default_rng(split_seed).permutation(len(y))
    return Digits(x, y, np.sort(order[:test_size]), np.sort(order[test_size:]), split_seed)


def moved_and_relit(x: np.ndarray, seed: int) -> np.ndarray:
    """x float32 (N, C, H, W) in [0, 1] -> a new array as a camera that moved and whose light
    changed would see it (bounds in ``MOVED``): each image turned, resized and moved (nearest
    pixel; dark beyond the frame, the digits' background), then lit anew by a gain, an
    offset and a ramp across the frame in a random direction, clipped to [0, 1] as a sensor
    saturates. A pure function of (x, seed)."""
    N, C, H, W = x.shape
    rng = np.random.default_rng([MOVED_STREAM, seed])
    angle = np.radians(rng.uniform(-MOVED["rotate"], MOVED["rotate"], N))
    zoom = rng.uniform(1 - MOVED["scale"], 1 + MOVED["scale"], N)
    shift_rows, shift_cols = rng.integers(-MOVED["shift"], MOVED["shift"] + 1, (2, N))
    gain, offset = rng.uniform(*MOVED["gain"], N), rng.uniform(-MOVED["offset"], MOVED["offset"], N)
    ramp, direction = rng.uniform(-MOVED["ramp"], MOVED["ramp"], N), rng.uniform(0, 2 * np.pi, N)

    def per_image(values):
        return values[:, None, None]
    cy, cx = (H - 1) / 2, (W - 1) / 2
    rows, cols = np.mgrid[0:H, 0:W]
    down, across = rows[None] - cy - per_image(shift_rows), cols[None] - cx - per_image(shift_cols)   # (N, H, W)
    cos, sin = per_image(np.cos(angle) / zoom), per_image(np.sin(angle) / zoom)
    source_cols = np.rint(cos * across + sin * down + cx).astype(np.intp)
    source_rows = np.rint(cos * down - sin * across + cy).astype(np.intp)
    inside = (source_cols >= 0) & (source_cols < W) & (source_rows >= 0) & (source_rows < H)
    n = np.arange(N)[:, None, None]
    moved = x[n, :, np.clip(source_rows, 0, H - 1), np.clip(source_cols, 0, W - 1)]   # (N, H, W, C)
    moved = np.where(inside[..., None], moved, 0.0).transpose(0, 3, 1, 2)
    along = ((cols[None] - cx) * per_image(np.cos(direction)) + (rows[None] - cy) * per_image(np.sin(direction)))
    light = per_image(ramp) * along / max(cx, cy, 1.0)   # ± ramp at the frame's edge
    relit = per_image(gain)[:, None] * moved + (per_image(offset) + light)[:, None]
    return np.clip(relit, 0.0, 1.0).astype(np.float32)
