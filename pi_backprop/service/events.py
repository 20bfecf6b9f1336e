"""What the service tells the world: one bus of events, many listeners.

The loop publishes; the status LEDs, the journal, the JSON-lines file, the web page and MQTT
listen. A listener never reaches into the loop: what it needs is in the event.

    events = EventBus()
    events.subscribe(print, kinds=("checkpoint",))          # quick: runs in the publisher's thread
    with events.listen(kinds=("prediction", "state")) as inbox:   # slow clients: their own queue
        event = inbox.get(timeout=1.0)

A subscriber runs in the publisher's thread: the loop's, or the LED thread's for ``lights``;
so it must be thread-safe, and events of different threads may reach it out of number order.

Event kinds and their data (every value JSON-serialisable: numbers, strings, lists, None):

state       state ("starting", "collecting", "training", "paused", "resting" (trained
            enough on the samples there are, until new ones come), "idle", "error",
            "stopping"), previous (the state before, or None)
lights      state (the status-LED pattern's name), text (what the LEDs show, in words)
sample      id (the store's sample id), label (class index or None), class (name or None),
            source, time (Unix seconds of the capture); a deleted sample: id, deleted (True);
            a class cleared: label, class, cleared (how many samples went)
prediction  index, class, confidence (0..1), unsure (True when confidence is below
            [predict] min_confidence: index and class are then only the best guess), scores
            (one confidence per class), label (the sample's label or None), step, time (Unix
            seconds of the capture)
metrics     step, train_loss, train_accuracy, eval_loss, eval_accuracy, eval_samples, lr,
            confusion (validation samples of class i predicted as class j, as confusion[i][j];
            None without validation samples)
checkpoint  path, step
rollback    step (the step now in use), lr, reason, automatic (True after divergence)
failure     part ("store", "disk", "checkpoint", "training", "capture"), message
reload      applied (config keys applied live), restart (keys that need a restart)
status      text (the line systemd's STATUS= shows), step, samples
"""

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Self

_log = logging.getLogger(__name__)

KINDS = ("state", "lights", "sample", "prediction", "metrics", "checkpoint", "rollback", "failure",
         "reload", "status")
LISTEN_QUEUE = 256   # events a slow listener may fall behind by; beyond that the oldest go


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing that happened: ``kind`` (one of ``KINDS``), ``data`` (a dict of plain values),
    ``time`` (Unix seconds) and ``number`` (1, 2, ... in publishing order, per bus)."""

    kind: str
    data: dict
    time: float
    number: int

    def as_dict(self) -> dict:
        """``{"kind", "number", "time", **data}``: what the web page and MQTT send.

        ``time`` is when it happened: the capture time for samples and predictions (their data
        carry it), else the time of publishing.
        """
        return {"kind": self.kind, "number": self.number, "time": self.time, **self.data}


class Listener:
    """A bounded queue of events for one client (a web page's stream, the MQTT thread).

    ``get(timeout)`` returns the next ``Event`` or None; ``dropped`` counts the events lost
    because the client fell more than ``maxsize`` behind (the publisher never waits for it).
    A context manager: leaving it unsubscribes.
    """

    def __init__(self, bus: "EventBus", kinds: frozenset[str] | None, maxsize: int):
        self._bus, self.kinds = bus, kinds
        self._events = collections.deque(maxlen=maxsize)
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, event: Event) -> None:
        """Queue one event (the bus calls this)."""
        with self._ready:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(event)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        with self._ready:
            if not self._events:
                self._ready.wait(timeout)
            return self._events.popleft() if self._events else None

    def close(self) -> None:
        self._bus.unsubscribe(self.put)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    """Hands each published event to every subscriber whose ``kinds`` include it.

    Subscribers given to ``subscribe`` run in the publishing thread and must be quick (an LED,
    a log line, a file append); one that raises is logged and the others still run. Clients
    that talk to a network take a ``listen()`` queue and read it in their own thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers = []   # (callable(Event), frozenset of kinds or None for all)
        self._count = 0
        self._delivering = threading.local()   # .pending: this thread's events not yet delivered

    def subscribe(self, callback: Callable[[Event], object],
                  kinds: str | Iterable[str] | None = None) -> Callable[[Event], object]:
        """Call ``callback(event)`` for every event of ``kinds`` (default: all); returns callback."""
        kinds = _checked_kinds(kinds)
        with self._lock:
            self._subscribers.append((callback, kinds))
        return callback

    def unsubscribe(self, callback: Callable[[Event], object]) -> None:
        with self._lock:
            self._subscribers = [(c, k) for c, k in self._subscribers if c != callback]

    def listen(self, kinds: str | Iterable[str] | None = None, maxsize: int = LISTEN_QUEUE) -> Listener:
        """A new ``Listener`` queue subscribed to ``kinds`` (default: all)."""
        listener = Listener(self, _checked_kinds(kinds), maxsize)
        self.subscribe(listener.put, kinds)
        return listener

    def publish(self, kind: str, **data: object) -> Event:
        """Make the event and hand it on; returns it.

        An event published by a subscriber (a state change that turns the LEDs, which report
        their new pattern) is handed on after the one being delivered, so that every
        subscriber sees one thread's events in publishing order.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
        with self._lock:
            self._count += 1
            event = Event(kind, data, time.time(), self._count)
        pending = getattr(self._delivering, "pending", None)
        if pending is not None:        # called from a subscriber: the outer publish delivers it
            pending.append(event)
            return event
        self._delivering.pending = pending = collections.deque([event])
        try:
            while pending:
                self._deliver(pending.popleft())
        finally:
            self._delivering.pending = None
        return event

    def _deliver(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback, kinds in subscribers:
            if kinds is None or event.kind in kinds:
                try:
                    callback(event)
                except Exception:   # noqa: BLE001 - one broken listener must not stop the service
                    _log.exception("a listener of %s events failed", event.kind)


def _checked_kinds(kinds: str | Iterable[str] | None) -> frozenset[str] | None:
    if kinds is None:
        return None
    kinds = frozenset((kinds,) if isinstance(kinds, str) else kinds)
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise ValueError(f"unknown event kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    return kinds
