"""Which label a sample captured now gets.

Label commands (``label_start``/``label_stop``/``label_next``, from the web page, MQTT or the
press-mode buttons) change it; the capture thread asks ``take()`` right after each read.
Buttons in ``hold`` mode are read at that instant too (``add_level``): a button's level, read
when the sample is taken, cannot be left "held" by a release edge that the bounce filter of
RPi.GPIO swallowed.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable

_log = logging.getLogger(__name__)


class Labelling:
    """The label state, safe to use from any thread.

    class_names : tuple of str, for messages; clock: seconds, monotonic (tests may pass their own)
    yielding    : sources whose holds count only while no other source holds (the simulated
                  operator gives way to a person at the page)
    """

    def __init__(self, class_names: Iterable[str], *, clock: Callable[[], float] = time.monotonic,
                 yielding: Iterable[str] = ()):
        self.class_names = tuple(class_names)
        self._yielding = frozenset(yielding)
        self._clock = clock
        self._lock = threading.Lock()
        self._holds = {}      # source -> (class index, monotonic end or None)
        self._next = None     # class index for the next sample only
        self._levels = []     # callables() -> class index or None, read at each capture
        self._warned = None

    def start(self, index: int, source: str, seconds: float | None = None) -> None:
        """Label every sample from now as ``index`` until ``stop(source)`` or for ``seconds``."""
        with self._lock:
            self._holds[source] = (index, None if seconds is None else self._clock() + seconds)

    def stop(self, source: str) -> bool:
        """End ``source``'s hold; True if it had one."""
        with self._lock:
            return self._holds.pop(source, None) is not None

    def next(self, index: int) -> None:
        """Label only the next sample ``index`` (a later call wins)."""
        with self._lock:
            self._next = index

    def add_level(self, read: Callable[[], int | None]) -> None:
        """``read() -> class index or None`` is asked at every capture (hold-mode buttons)."""
        self._levels.append(read)

    def take(self) -> int | None:
        """The label for a sample captured now, or None (unlabelled).

        A pending ``next`` label first (and only once); else the one class being held (by
        commands or buttons); None if nothing is held, or if different classes are (ambiguous).
        """
        with self._lock:
            label, self._next = self._next, None
        if label is not None:
            return label
        held = self._held_classes()
        if len(held) > 1:
            if held != self._warned:
                _log.warning("labels %s held together: samples left unlabelled",
                             ", ".join(repr(self.class_names[c]) for c in sorted(held)))
            self._warned = held
            return None
        self._warned = None
        return held.pop() if held else None

    def peek(self) -> int | None:
        """The label ``take()`` would give now, without using up a ``next`` label or warning."""
        with self._lock:
            label = self._next
        if label is not None:
            return label
        held = self._held_classes()
        return held.pop() if len(held) == 1 else None

    def _held_classes(self) -> set:
        holds = self.held()
        ruling = {s: c for s, c in holds.items() if s not in self._yielding}
        return set((ruling or holds).values()) | {c for c in (read() for read in self._levels) if c is not None}

    def ruling_class(self) -> int | None:
        """The one class held by commands from sources that do not yield (a person at the
        page, MQTT), or None: what a yielding source (the simulated operator) gives way to."""
        ruling = {c for s, c in self.held().items() if s not in self._yielding}
        return ruling.pop() if len(ruling) == 1 else None

    def held(self) -> dict:
        """``{source: class index}`` of the commanded holds in force now (ended ones dropped)."""
        now = self._clock()
        with self._lock:
            self._holds = {s: (c, end) for s, (c, end) in self._holds.items() if end is None or end > now}
            return {s: c for s, (c, _) in self._holds.items()}
