"""What the page shows at once when it opens: the newest event of each kind that describes
the service now, kept from the service's events (a quick subscriber)."""

import threading

# The kinds whose newest event is the present (a sample or a failure is news, not state).
CURRENT = ("state", "lights", "status", "metrics", "prediction", "checkpoint", "rollback")


class PageState:
    """Subscribe ``on_event`` to the service's events; ``snapshot()`` is
    ``{kind: event.as_dict()}`` of the newest event of each ``CURRENT`` kind seen."""

    def __init__(self):
        self._lock = threading.Lock()
        self._newest = {}

    def on_event(self, event) -> None:
        with self._lock:
            self._newest[event.kind] = event.as_dict()

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._newest)
