"""``pi-backprop predict``: classify an image file, a ``.npy`` array or a fresh camera capture
with the newest checkpoint, and show the top classes with their confidence.

Confidence is the softmax of the outputs for a cross-entropy model and the (sigmoid)
outputs for an MSE model. An input whose best confidence is below ``--min-confidence`` is
reported as unsure (its top classes are still listed). ``--json`` prints one JSON object per
input line instead.
"""

import argparse
import json
import secrets
from pathlib import Path

import numpy as np

from ..exc import ConfigError, DataError
from ..storage.npfiles import load_numpy
from ..training.inference import load_newest
from .evaluate import add_location_arguments
from .images import read_image

EXAMPLES = """\
examples:
  pi-backprop predict photo.png
  pi-backprop predict inputs.npy --json
  pi-backprop predict --camera                       a fresh frame from the Pi camera
  pi-backprop predict --camera --simulate            the simulated camera (on a desktop)
  pi-backprop predict photo.png --min-confidence 0.8 "unsure" below 80% confidence
"""


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    add_location_arguments(parser)
    parser.add_argument("input", nargs="?", metavar="FILE",
                        help="a PNG/JPEG image, or a .npy array: a model input (C, H, W) or (features,), "
                             "a batch of them, or a uint8 camera frame (H, W[, 3])")
    parser.add_argument("--camera", action="store_true", help="classify a fresh frame from the camera")
    parser.add_argument("--simulate", action="store_true", help="with --camera: use the simulated camera")
    parser.add_argument("--seed", type=int, help="with --simulate: the simulated camera's seed (default: random)")
    parser.add_argument("--top", type=int, default=3, metavar="K", help="classes listed per input (default 3)")
    parser.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                        help="report an input as unsure when its best confidence is below P (0..1; "
                             "default 0: never), as the service's [predict] min_confidence does")
    parser.add_argument("--json", action="store_true", help="one JSON object per input, for scripts")


def run(args) -> int:
    if args.camera == (args.input is not None):
        raise ConfigError("give either an image or .npy FILE, or --camera")
    if (args.simulate or args.seed is not None) and not args.camera:
        raise ConfigError("--simulate and --seed go with --camera")
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    if not 0 <= args.min_confidence <= 1:
        raise ConfigError(f"--min-confidence must be between 0 and 1 (0.8 = 80%), got {args.min_confidence:g}")
    loaded = load_newest(args.state_dir, args.checkpoint)
    shape = tuple(loaded.definition.input_shape)
    if args.camera:
        x, names, truth = _capture(shape, args.simulate, args.seed, loaded.class_names)
    else:
        x, names = _read_input(Path(args.input), shape, loaded.model.dtype)
        truth = None
    scores = loaded.confidences(x)
    top = min(args.top, scores.shape[1])
    for name, row in zip(names, scores):
        order = np.argsort(-row, kind="stable")[:top]
        ranked = [(loaded.class_names[i], float(row[i])) for i in order]
        unsure = ranked[0][1] < args.min_confidence
        if args.json:
            record = {"input": name, "class": ranked[0][0], "confidence": round(ranked[0][1], 6), "unsure": unsure,
                      "top": [{"class": c, "confidence": round(p, 6)} for c, p in ranked],
                      "model": loaded.definition.name, "checkpoint": str(loaded.info.path),
                      "step": loaded.info.step}
            if truth is not None:
                record["shown"] = truth
            print(json.dumps(record))
        else:
            _print_text(name, ranked, truth, unsure)
    if not args.json:
        print(f"({loaded.definition.name}, {loaded.info.path.name}, step {loaded.info.step}; "
              f"confidence: {'sigmoid outputs' if loaded.definition.loss == 'mse' else 'softmax'})")
    return 0


def _print_text(name, ranked, truth, unsure):
    """ranked: (class name, confidence 0..1) pairs, best first; truth: what a simulated camera showed."""
    best, confidence = ranked[0]
    guess = f"{best} {100 * confidence:.1f}%"
    shown = f"  (the simulated camera showed {truth})" if truth is not None else ""
    print(f"{name}: {f'unsure ({guess})' if unsure else guess}{shown}")
    width = max(len(c) for c, _ in ranked)
    for place, (label, p) in enumerate(ranked, 1):
        print(f"  {place}. {label:<{width}} {100 * p:5.1f}%")


def _capture(shape, simulate, seed, class_names):
    """One camera frame as a batch of one model input; the simulated camera also says what it showed."""
    if len(shape) != 3:
        raise ConfigError(f"the model takes sensor vectors {shape}, not camera images")
    from ..hardware.preprocess import frame_to_input

    if simulate:
        from ..hardware.simulated import SimulatedCamera

        camera = SimulatedCamera(seed=secrets.randbits(32) if seed is None else seed, class_names=class_names)
    else:
        from ..hardware.camera import PiCamera

        camera = PiCamera()
    with camera:
        frame = camera.capture()
        truth = class_names[camera.last_label] if simulate else None
        x = frame_to_input(frame, shape, channel_order=camera.channel_order)
    return x[None], ["camera"], truth


def _read_input(path, shape, dtype):
    """A file as model inputs (N, *shape) and a name per input."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        x = _from_npy(path, shape)
    else:
        if len(shape) != 3:
            raise DataError(f"{path}: the model takes sensor vectors {shape}, not images; give a .npy")
        from ..hardware.preprocess import frame_to_input

        x = frame_to_input(read_image(path), shape)[None]
    x = np.asarray(x, dtype=dtype)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: input {int(np.flatnonzero(~finite)[0])} holds NaN or inf")
    names = [str(path)] if len(x) == 1 else [f"{path}[{i}]" for i in range(len(x))]
    return x, names


def _from_npy(path, shape):
    """(N, *shape) from a .npy: a model input, a batch, or a uint8 camera frame (or frames)."""
    array = load_numpy(path, "npy")
    if array.size == 0:
        raise DataError(f"{path}: holds no inputs (shape {array.shape})")
    if array.dtype.hasobject or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) \
            or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{path}: must hold real numbers, got dtype {array.dtype}")
    scale = 1 / 255 if array.dtype == np.uint8 else 1.0  # uint8 inputs are 0..255 pixels
    if array.shape == shape:
        return array[None] * scale
    if array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        return array * scale
    if len(shape) == 3 and shape[0] == 1 and array.shape == shape[1:]:
        return array[None, None] * scale                  # (H, W) for a one-channel model
    if len(shape) == 3 and array.dtype == np.uint8 and array.ndim in (2, 3, 4):
        from ..hardware.preprocess import frame_to_input

        x = frame_to_input(array, shape)                  # camera frame(s), R, G, B
        return x if x.ndim == 4 else x[None]
    want = ", ".join(map(str, shape))
    frame = " or a uint8 camera frame (H, W[, 3])" if len(shape) == 3 else ""
    raise DataError(f"{path}: array of shape {array.shape} does not fit the model: it takes ({want}), "
                    f"a batch (N, {want}){frame}")
