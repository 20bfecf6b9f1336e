"""Simulated camera and sensor: the desktop twins of the Pi's camera and ADC.

Both are deterministic given a seed, and both produce what the real hardware produces
(uint8 camera frames; sensor readings in [0, 1] like gpiozero's ``MCP3008.value``), so the
same preprocessing and windowing run on a laptop as on a Pi. ``camera_dataset`` and
``sensor_dataset`` are the ``sim:camera`` / ``sim:sensor`` data sets: sample ``i`` depends
only on ``(seed, i)``, so a larger ``n`` extends a smaller one.

Pure numpy: no gpiozero, no picamera2, nothing from the training core.
"""

import numpy as np

from ..exc import ConfigError
from .device import Device
from .pacing import Pacer
from .preprocess import frame_to_input

CAMERA_CLASSES = ("empty", "circle", "square", "triangle", "cross", "ring", "diamond", "hbar", "vbar", "x")
SENSOR_CLASSES = ("still", "slow_wave", "fast_wave", "spikes")

# Scene geometry, in units of the frame's shorter side, origin at the frame centre, y up.
# Shapes stay inside the centred square that the preprocessing crops to.
_CENTRE_RANGE = 0.10       # centre offset, each axis
_RADIUS_RANGE = (0.24, 0.36)
# Rotation is kept small on purpose: square/diamond and cross/x differ only by 45 degrees.
_MAX_ROTATION = np.deg2rad(15.0)
_CHUNK = 128               # frames rendered at once: bounds peak memory (Pi Zero 2 W: 512 MB)

# Distinct stream tags, so the camera and the sensor draw unrelated numbers from one seed.
_CAMERA_STREAM, _SENSOR_STREAM, _LIVE_STREAM = 0x0CA3, 0x5E45, 0x11FE


def _inside(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool mask of shape ``u.shape``: is (u, v), in units of the shape's radius, inside ``kind``?"""
    au, av = np.abs(u), np.abs(v)
    if kind == "empty":
        return np.zeros(u.shape, bool)
    if kind == "circle":
        return u * u + v * v <= 1.0
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.42)
    if kind == "square":
        return np.maximum(au, av) <= 0.85
    if kind == "diamond":
        return au + av <= 1.05
    if kind == "triangle":  # apex up
        return (v >= -0.6) & (au <= (1.0 - v) * 0.66)
    if kind == "hbar":
        return (au <= 1.0) & (av <= 0.26)
    if kind == "vbar":
        return (au <= 0.26) & (av <= 1.0)
    if kind == "cross":
        return ((au <= 0.24) & (av <= 1.0)) | ((av <= 0.24) & (au <= 1.0))
    if kind == "x":
        return _inside("cross", (u + v) * np.float32(0.7071), (v - u) * np.float32(0.7071))
    raise AssertionError(kind)


def _check_names(class_names, known, what):
    """The names, checked: distinct, at least one, no more than the kinds the simulation has."""
    names = tuple(class_names)
    if len(names) < 1 or len(set(names)) != len(names):
        raise ConfigError(f"{what} class names must be distinct and at least one, got {list(names)}")
    if len(names) > len(known):
        raise ConfigError(f"the simulated {what} shows {len(known)} kinds of thing ({', '.join(known)}); "
                          f"a model of {len(names)} classes needs a real {what}")
    return names


def _kinds(class_names, known):
    """What each class shows: a class named as one of ``known`` shows that one; the others
    (a model of a maker's own classes: "cup", "hand") show the kinds left over, in order."""
    spare = iter(kind for kind in known if kind not in class_names)
    return tuple(name if name in known else next(spare) for name in class_names)


def _scene(rng):
    """Random scene parameters for one frame: a dict of scalars and small arrays."""
    return {
        "centre": rng.uniform(-_CENTRE_RANGE, _CENTRE_RANGE, 2),
        "radius": rng.uniform(*_RADIUS_RANGE),
        "angle": rng.uniform(-_MAX_ROTATION, _MAX_ROTATION),
        # Light object on a darker background, each slightly tinted; the tint never
        # drops an object's brightness below 0.7 of its level, so grey models see it too.
        "background": rng.uniform(0.05, 0.35) * rng.uniform(0.8, 1.0, 3),
        "foreground": rng.uniform(0.6, 0.95) * rng.uniform(0.7, 1.0, 3),
        "gradient": rng.uniform(-0.08, 0.08, 2),   # uneven lighting across the frame
        "noise": rng.uniform(0.02, 0.05),
        "noise_seed": int(rng.integers(2**63)),
    }


def _render(kinds, scenes, height, width) -> np.ndarray:
    """uint8 (N, height, width, 3) RGB frames of ``kinds[i]`` drawn with ``scenes[i]``."""
    short = float(min(height, width))
    xs = ((np.arange(width, dtype=np.float32) + 0.5 - width / 2) / short)[None, None, :]
    ys = ((height / 2 - np.arange(height, dtype=np.float32) - 0.5) / short)[None, :, None]
    out = np.empty((len(kinds), height, width, 3), np.uint8)
    for start in range(0, len(kinds), _CHUNK):
        part = scenes[start:start + _CHUNK]
        n = len(part)
        cx, cy, radius, angle = (np.array([s[k] for s in part], np.float32).reshape(n, 1, 1)
                                 for k in ("cx", "cy", "radius", "angle"))
        cos, sin = np.cos(angle), np.sin(angle)
        dx, dy = xs - cx, ys - cy
        u, v = (cos * dx + sin * dy) / radius, (cos * dy - sin * dx) / radius
        mask = np.zeros((n, height, width), bool)
        part_kinds = np.asarray(kinds[start:start + _CHUNK])
        for kind in set(part_kinds.tolist()):
            rows = np.flatnonzero(part_kinds == kind)
            mask[rows] = _inside(kind, u[rows], v[rows])
        background = np.array([s["background"] for s in part], np.float32)
        contrast = np.array([s["foreground"] for s in part], np.float32) - background
        gradient = np.array([s["gradient"] for s in part], np.float32)
        light = gradient[:, 0, None, None] * xs + gradient[:, 1, None, None] * ys
        shape = mask.astype(np.float32)
        for i, scene in enumerate(part):
            noise = np.random.default_rng(scene["noise_seed"]).standard_normal((height, width, 3), np.float32)
            noise *= np.float32(scene["noise"] * 255.0)
            for c in range(3):  # per channel on (H, W) planes: no 4-d temporaries
                noise[..., c] += (light[i] + background[i, c] + shape[i] * contrast[i, c]) * np.float32(255.0)
            np.clip(noise + np.float32(0.5), 0, 255, out=noise)
            out[start + i] = noise.astype(np.uint8)
    return out


def _flat_scene(rng):
    scene = _scene(rng)
    scene["cx"], scene["cy"] = scene.pop("centre")
    return scene


def render_frames(labels, seed, resolution, class_names=CAMERA_CLASSES, *, first_index=0) -> np.ndarray:
    """uint8 (N, height, width, 3) RGB frames; frame ``k`` shows ``class_names[labels[k]]``.

    labels     : int sequence of class indices into ``class_names``
    resolution : (width, height) in pixels, as picamera2 sizes are given
    Frame ``k`` depends only on ``(seed, first_index + k, labels[k])``.
    """
    names = _kinds(_check_names(class_names, CAMERA_CLASSES, "camera"), CAMERA_CLASSES)
    width, height = (int(d) for d in resolution)
    kinds = [names[int(label)] for label in labels]
    scenes = [_flat_scene(np.random.default_rng((_CAMERA_STREAM, seed, first_index + k))) for k in range(len(kinds))]
    return _render(kinds, scenes, height, width)


def camera_dataset(n, seed, input_shape=(1, 28, 28), class_names=CAMERA_CLASSES):
    """``n`` labelled simulated camera samples, as the model sees them.

    Returns x float32 (n, C, H, W) in [0, 1] and y int64 (n,), ``y[i] = i % len(class_names)``.
    Each frame is rendered at twice the model's height in the camera's 4:3 aspect and
    goes through ``frame_to_input``, exactly as a live frame would.
    """
    names = _check_names(class_names, CAMERA_CLASSES, "camera")
    channels, height, width = (int(d) for d in input_shape)
    frame_h = 2 * height
    frame_w = max(2 * width, round(frame_h * 4 / 3))
    y = np.arange(int(n), dtype=np.int64) % len(names)
    x = np.empty((int(n), channels, height, width), np.float32)
    for start in range(0, int(n), _CHUNK):
        frames = render_frames(y[start:start + _CHUNK], seed, (frame_w, frame_h), names, first_index=start)
        x[start:start + len(frames)] = frame_to_input(frames, (channels, height, width))
    return x, y


class SimulatedCamera(Device):
    """A camera that shows simulated shapes: a stand-in for ``PiCamera`` on a desktop.

    seed        : int; the k-th capture is a pure function of (seed, k, class shown)
    resolution  : (width, height) of the frames in pixels
    class_names : the classes it shows: one of ``CAMERA_CLASSES`` shows that shape, any other
                  name one of the shapes no class is named after
    interval    : seconds between captures at least, as for ``PiCamera`` (default 0)
    clock, sleep: injectable time functions for the interval (tests)
    Frames are uint8 (height, width, 3) in R, G, B order (``channel_order = "RGB"``).
    ``show(label)`` chooses what the next captures show (as if the user held that object
    in front of the camera); ``show(None)`` (the default) picks a random class each time.
    ``last_label`` is the class index of the last capture.
    """

    device_name = "simulated camera"
    channel_order = "RGB"

    def __init__(self, seed=0, resolution=(320, 240), class_names=CAMERA_CLASSES, *, interval=0.0,
                 clock=None, sleep=None):
        self.class_names = _check_names(class_names, CAMERA_CLASSES, "camera")
        self._pacer = Pacer(interval, **{k: v for k, v in (("clock", clock), ("sleep", sleep)) if v is not None})
        self.resolution = tuple(int(d) for d in resolution)
        if len(self.resolution) != 2 or min(self.resolution) < 8:
            raise ConfigError(f"camera resolution must be (width, height) of at least 8 pixels, got {resolution}")
        self.seed = seed
        self.captures = 0
        self.last_label = None
        self._showing = None
        self._choices = np.random.default_rng((_LIVE_STREAM, seed))

    def show(self, label) -> None:
        """Show class ``label`` (a name or index) in the next captures; ``None``: random classes."""
        if label is None or isinstance(label, (int, np.integer)) and 0 <= label < len(self.class_names):
            self._showing = None if label is None else int(label)
        elif label in self.class_names:
            self._showing = self.class_names.index(label)
        else:
            raise ConfigError(f"the simulated camera has no class {label!r}; it knows: {', '.join(self.class_names)}")

    def capture(self) -> np.ndarray:
        """The next frame: uint8 (height, width, 3), R, G, B."""
        self._ensure_open()
        self._pacer.wait()
        label = self._showing
        if label is None:
            label = int(self._choices.integers(len(self.class_names)))
        frame = render_frames([label], self.seed, self.resolution, self.class_names, first_index=self.captures)[0]
        self.captures += 1
        self.last_label = label
        return frame

    def capture_input(self, input_shape) -> np.ndarray:
        """The next frame as a model input: float32 (C, H, W) in [0, 1]."""
        return frame_to_input(self.capture(), input_shape, channel_order=self.channel_order)

    def __repr__(self):
        return f"SimulatedCamera(seed={self.seed}, resolution={self.resolution}, classes={len(self.class_names)})"


# -- sensor ---------------------------------------------------------------------------------

def _sensor_signal(kind: str, length: int, rng) -> np.ndarray:
    """float64 (length,) readings in [0, 1] of one class, starting at a random phase.

    Samples are at the sensor's sampling rate; periods are in samples.
    still: flat with noise; slow_wave: period 16..32; fast_wave: period 3..6;
    spikes: narrow pulses every 6..11 samples, so every 32-sample window has several.
    """
    t = np.arange(length, dtype=np.float64)
    level = rng.uniform(0.35, 0.65)
    noise = rng.uniform(0.01, 0.03)
    if kind == "still":
        signal = np.full(length, level)
    elif kind in ("slow_wave", "fast_wave"):
        period = rng.uniform(16.0, 32.0) if kind == "slow_wave" else rng.uniform(3.0, 6.0)
        signal = level + rng.uniform(0.2, 0.32) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    elif kind == "spikes":
        spacing = rng.uniform(6.0, 11.0)
        first = rng.uniform(0, spacing)
        positions = np.rint(np.arange(first, length, spacing)).astype(int)
        positions = positions[positions < length]
        signal = np.full(length, level)
        signal[positions] += rng.uniform(0.25, 0.4, positions.size)
        # A short decay tail after each spike, like a tap on an accelerometer.
        tail = positions + 1
        tail = tail[tail < length]
        signal[tail] += rng.uniform(0.05, 0.12, tail.size)
    else:
        raise AssertionError(kind)
    return np.clip(signal + noise * rng.standard_normal(length), 0.0, 1.0)


def sensor_dataset(n, seed, features=32, class_names=SENSOR_CLASSES):
    """``n`` labelled simulated sensor windows.

    Returns x float32 (n, features) of readings in [0, 1] and y int64 (n,),
    ``y[i] = i % len(class_names)``; window ``i`` depends only on ``(seed, i)``.
    """
    names = _kinds(_check_names(class_names, SENSOR_CLASSES, "sensor"), SENSOR_CLASSES)
    y = np.arange(int(n), dtype=np.int64) % len(names)
    x = np.empty((int(n), int(features)), np.float32)
    for i in range(int(n)):
        x[i] = _sensor_signal(names[y[i]], int(features), np.random.default_rng((_SENSOR_STREAM, seed, i)))
    return x, y


class SimulatedSensor(Device):
    """A simulated analog input: a stand-in for a gpiozero ``MCP3008`` channel.

    seed        : int; the reading sequence is a pure function of it and of ``show`` calls
    class_names : the classes it produces: one of ``SENSOR_CLASSES`` gives that signal, any
                  other name one of the signals no class is named after
    Each read of ``value`` is the next reading, a float in [0, 1], one sample of a
    continuous signal whose kind is chosen by ``show(label)`` (``None``: a random kind
    each segment). Reading it through ``SensorSource`` gives windows like ``sensor_dataset``.
    """

    device_name = "simulated sensor"

    _SEGMENT = 256  # readings generated at once; a new segment draws new amplitude/period

    def __init__(self, seed=0, class_names=SENSOR_CLASSES):
        self.class_names = _check_names(class_names, SENSOR_CLASSES, "sensor")
        self._kinds = _kinds(self.class_names, SENSOR_CLASSES)
        self.seed = seed
        self.reads = 0
        self.last_label = None
        self._showing = None
        self._segments = 0
        self._buffer = np.empty(0)
        self._position = 0

    def show(self, label) -> None:
        """Produce class ``label`` (a name or index) from the next reading on; ``None``: random."""
        if label is None or isinstance(label, (int, np.integer)) and 0 <= label < len(self.class_names):
            label = None if label is None else int(label)
        elif label in self.class_names:
            label = self.class_names.index(label)
        else:
            raise ConfigError(f"the simulated sensor has no class {label!r}; it knows: {', '.join(self.class_names)}")
        if label != self._showing:
            self._showing = label
            self._buffer = np.empty(0)  # switch at once, as a real signal would

    @property
    def value(self) -> float:
        """The next reading, in [0, 1]."""
        self._ensure_open()
        if self._position >= self._buffer.size:
            rng = np.random.default_rng((_LIVE_STREAM, _SENSOR_STREAM, self.seed, self._segments))
            label = self._showing if self._showing is not None else int(rng.integers(len(self.class_names)))
            self._buffer = _sensor_signal(self._kinds[label], self._SEGMENT, rng)
            self._position = 0
            self._segments += 1
            self.last_label = label
        reading = float(self._buffer[self._position])
        self._position += 1
        self.reads += 1
        return reading

    def __repr__(self):
        return f"SimulatedSensor(seed={self.seed}, classes={len(self.class_names)})"
