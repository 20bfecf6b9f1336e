"""The newest capture, for clients that show it live (the web page).

The capture thread puts each frame (or sensor window) and the model input made of it; a
client takes the newest when it wants one, at its own rate. Nothing waits and nothing
queues: a client that looks less often simply sees fewer frames.
"""

import dataclasses
import threading

import numpy as np


@dataclasses.dataclass(frozen=True)
class Capture:
    """number  : 1, 2, ... per capture (a client sees whether it has this one already)
    time    : Unix seconds of the capture
    frame   : uint8 (H, W, 3) R, G, B as the camera gave it, or None (a sensor)
    x       : the model input float32 (input_shape): (C, H, W) in [0, 1], or a window (L,)"""

    number: int
    time: float
    frame: np.ndarray | None
    x: np.ndarray


class LiveView:
    """Thread-safe holder of the newest ``Capture``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._newest = None
        self._count = 0

    def put(self, time: float, x: np.ndarray, frame: np.ndarray | None = None) -> None:
        with self._lock:
            self._count += 1
            self._newest = Capture(self._count, time, frame, x)

    def newest(self) -> Capture | None:
        with self._lock:
            return self._newest
