"""``pi-backprop info``: what this machine has: board, camera, pins, numba, backend."""

import platform
import sys

import numpy as np

from .. import __version__
from ..hardware.camera import camera_status
from ..hardware.pins import pi_model, pin_status
from ..nn import get_backend
from ..nn.engine.cache import choose, numba_version
from ..paths import state_dir


def add_arguments(parser):
    parser.add_argument("--simulate", action="store_true",
                        help="report the pins as the service would use them with --simulate")


def _numba_line() -> str:
    version = numba_version()
    if version is None:
        return "not installed: the numpy backend runs instead (same results, slower)"
    return f"{version} (kernel cache: {choose(version).text})"


def lines(simulate=False) -> list:
    """The report as (label, value) pairs, in print order."""
    model = pi_model()
    return [
        ("pi-backprop", __version__),
        ("board", model or f"not a Raspberry Pi ({platform.machine()})"),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", np.__version__),
        ("numba", _numba_line()),
        ("backend", get_backend()),
        ("camera", camera_status() if model else
         'none (not a Raspberry Pi: use --simulate, or source.kind = "simulated-camera")'),
        ("pins", pin_status(True if simulate else None)),
        ("state dir", str(state_dir())),
    ]


def run(args) -> int:
    for label, value in lines(simulate=args.simulate):
        print(f"{label + ':':<13}{value}")
    return 0
