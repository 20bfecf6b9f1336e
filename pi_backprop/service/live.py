"""The newest capture, for clients that show it live (the web page).

The capture thread puts each frame (or sensor window) and the model input made of it; a
client takes the newest when it wants one, at its own rate, and can ask again for one of
the last few by number (the model input of the frame it shows). Nothing waits and nothing
queues: a client that looks less often simply sees fewer frames.
"""

import collections
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


KEPT = 8      # captures held: a client asking for the input of the frame it shows finds it


class LiveView:
    """Thread-safe holder of the newest ``KEPT`` ``Capture``s."""

    def __init__(self):
        self._lock = threading.Lock()
        self._recent = collections.deque(maxlen=KEPT)
        self._count = 0

    def put(self, time: float, x: np.ndarray, frame: np.ndarray | None = None) -> None:
        with self._lock:
            self._count += 1
            self._recent.append(Capture(self._count, time, frame, x))

    def newest(self) -> Capture | None:
        with self._lock:
            return self._recent[-1] if self._recent else None

    def find(self, number: int) -> Capture | None:
        """Capture ``number`` if it is still held, else None."""
        with self._lock:
            for capture in reversed(self._recent):
                if capture.number == number:
                    return capture
        return None
