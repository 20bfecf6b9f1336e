"""The lifecycle every device shares: ``with`` closes it, ``close()`` may be called again and
again, ``closed`` tells, and any use after ``close()`` raises ``DeviceClosed``."""

import threading

from ..exc import DeviceClosed

# Held only to test and set ``_closed``: one lock for all devices, since closing is rare.
_CLOSING = threading.Lock()


class Device:
    """Base of the cameras, sensor sources, status lights and label buttons (real and simulated).

    A subclass names itself in ``device_name`` (for the error message), calls
    ``self._ensure_open()`` first in every method that uses the device, and gives back what
    it holds in ``_release()``, which ``close()`` calls once.
    """

    device_name = "device"
    device_plural = False  # "the label buttons are closed"
    _closed = False

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def close(self) -> None:
        """Release the device. Safe to call twice, and from two threads at once."""
        with _CLOSING:
            if self._closed:
                return
            self._closed = True
        self._release()

    def _release(self) -> None:
        """Give back pins, camera or threads; called once, by ``close()``."""

    def _ensure_open(self) -> None:
        if self._closed:
            raise DeviceClosed(f"the {self.device_name} {'are' if self.device_plural else 'is'} closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
