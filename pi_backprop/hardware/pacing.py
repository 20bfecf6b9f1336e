"""``Pacer``: keeps captures or readings at least an interval apart, without drift."""

import time

from ..exc import ConfigError


class Pacer:
    """Waits so that successive ``wait()`` calls return at least ``interval`` seconds apart.

    interval : seconds, >= 0 (0: never waits)
    clock    : monotonic seconds (injectable for tests); sleep: ``time.sleep``-like
    Deadlines advance by ``interval`` from the previous deadline, so a rate holds on
    average; after a stall longer than one interval it restarts from now instead of
    bursting to catch up.
    """

    def __init__(self, interval: float, *, clock=time.monotonic, sleep=time.sleep):
        interval = float(interval)
        if not interval >= 0:
            raise ConfigError(f"interval must be >= 0 seconds, got {interval!r}")
        self.interval = interval
        self._clock, self._sleep = clock, sleep
        self._next = None

    def wait(self) -> float:
        """Sleep until the next slot; return the seconds slept."""
        now = self._clock()
        if self._next is None or self.interval == 0:
            self._next = now + self.interval
            return 0.0
        delay = self._next - now
        if delay > 0:
            self._sleep(delay)
            self._next += self.interval
            return delay
        self._next = (now if -delay > self.interval else self._next) + self.interval
        return 0.0
