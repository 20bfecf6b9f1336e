"""Storing the loop's samples on a card that fails: the store's faults, each said once.

    writer = SampleWriter(store, on_stored=publish_sample, on_failure=show_error)
    writer.add(sample, source)      # for every captured sample worth keeping
    writer.retry()                  # every pass of the loop: stores what waited, when due

- A **full disk** drops the sample (the disk cannot hold it): one error line with the space
  left, then quiet; storing resumes by itself with the first sample that fits, and says how
  many were dropped meanwhile.
- A **lock held by another process** (a ``sqlite3`` shell, a long import) keeps the samples
  in memory, at most ``PENDING_SAMPLES`` (the oldest go beyond that), and retries with back-off,
  each try waiting briefly for the lock instead of the store's full busy timeout, so that
  training, prediction and the watchdog go on; one warning names the lock, one line says
  when the samples are in.
- A **damaged file** (``StoreCorruptError``) goes to ``on_corrupt`` (the service repairs
  the store) and the sample waits as for a lock.
- Anything else: the sample is not stored, and the line says why.

Only the loop's thread calls it.
"""

import collections
import logging
import time
from collections.abc import Callable

from ..exc import DataError, StoreCorruptError, StoreFullError, StoreLockedError
from ..storage.faults import free_text
from ..storage.store import SampleStore
from .capture import Sample

_log = logging.getLogger(__name__)

PENDING_SAMPLES = 256      # samples kept in memory while the store is locked
FIRST_RETRY = 1.0          # seconds before the first retry of a locked store; doubles each time
MAX_RETRY = 30.0           # seconds between retries, at most
RETRY_BUSY_TIMEOUT = 0.2   # seconds a retry waits for the lock (the first try waits the store's own)


class SampleWriter:
    """Stores samples in ``store`` (replace ``writer.store`` when the file is replaced).

    on_stored(sample_id, sample, source) : after each sample is in the store
    on_failure(part, message) : every failure ("store" or "disk"), for the error LEDs
    on_corrupt(error) : the store reported damage; the service repairs or replaces it
    clock : monotonic seconds (tests pass their own)
    """

    def __init__(self, store: SampleStore, *, on_stored: Callable[[int, Sample, str], object],
                 on_failure: Callable[[str, str], object],
                 on_corrupt: Callable[[StoreCorruptError], object] | None = None,
                 reopen: Callable[[], SampleStore] | None = None,
                 on_reopened: Callable[[SampleStore], object] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.reopen, self.on_reopened = reopen, on_reopened
        self.on_stored, self.on_failure, self.on_corrupt = on_stored, on_failure, on_corrupt
        self.clock = clock
        self.pending = collections.deque()     # (sample, source) waiting for a locked store
        self.lost_waiting = 0                  # pending samples dropped: more than PENDING_SAMPLES waited
        self.dropped_full = 0                  # samples dropped because the disk was full
        self.full = False                      # the last try found the disk full
        self.locked = False                    # the last try found the store locked (or damaged)
        self._next_try = 0.0
        self._retry_after = FIRST_RETRY

    @property
    def waiting(self) -> int:
        """Samples in memory, waiting for the store."""
        return len(self.pending)

    def add(self, sample: Sample, source: str) -> None:
        """Store one sample now, or queue it behind those that wait."""
        self.pending.append((sample, source))
        if len(self.pending) > PENDING_SAMPLES:
            self.pending.popleft()
            self.lost_waiting += 1
        if len(self.pending) == 1 or self.clock() >= self._next_try:
            self._store_pending()

    def retry(self, *, now: bool = False) -> None:
        """Store what waits, if a retry is due (or ``now``: a last try before stopping)."""
        if self.pending and (now or self.clock() >= self._next_try):
            self._store_pending()

    def _store_pending(self) -> None:
        if self.store.readonly and not self._reopened():
            return
        while self.pending:
            sample, source = self.pending[0]
            try:
                if self.locked:
                    with self.store.busy_timeout(RETRY_BUSY_TIMEOUT):
                        sample_id = self._add(sample, source)
                else:
                    sample_id = self._add(sample, source)
            except StoreFullError as error:
                self.pending.popleft()
                self._disk_full(error)
                continue
            except StoreLockedError as error:
                self._locked(error)
                return
            except StoreCorruptError as error:
                self._locked(error)
                if self.on_corrupt is not None:
                    self.on_corrupt(error)
                return
            except DataError as error:       # a read-only file system, a file gone: say why, go on
                self.pending.popleft()
                _log.warning("sample not stored: %s", error)
                self.on_failure("store", f"sample not stored: {error}")
                continue
            self.pending.popleft()
            self._stored(sample_id, sample, source)

    def _reopened(self) -> bool:
        """A store opened read-only because the disk was full at the start: try it writable
        again (with back-off); the samples meanwhile are dropped, as on a full disk."""
        if self.reopen is None or self.clock() < self._next_try:
            self._drop_pending_as_full()
            return False
        try:
            store = self.reopen()
        except StoreFullError:
            self._next_try = self.clock() + self._retry_after
            self._retry_after = min(MAX_RETRY, self._retry_after * 2)
            self._drop_pending_as_full()
            return False
        self.store, self._retry_after, self._next_try = store, FIRST_RETRY, 0.0
        if self.on_reopened is not None:
            self.on_reopened(store)
        return True

    def _drop_pending_as_full(self) -> None:
        self.full = True
        self.dropped_full += len(self.pending)
        self.pending.clear()
        self.on_failure("disk", "sample not stored: the disk is full")

    def _add(self, sample: Sample, source: str) -> int:
        return self.store.add_sample(sample.x, sample.label, source, time=sample.time)

    def _stored(self, sample_id: int, sample: Sample, source: str) -> None:
        if self.full:
            _log.info("storing samples again (%s); %d dropped while the disk was full",
                      free_text(self.store.path), self.dropped_full)
            self.full, self.dropped_full = False, 0
        if self.locked:
            lost = f", {self.lost_waiting} lost (more than {PENDING_SAMPLES} waited)" if self.lost_waiting else ""
            _log.info("sample store %s writable again: the waiting samples are stored%s", self.store.path, lost)
            self.locked, self._retry_after, self.lost_waiting = False, FIRST_RETRY, 0
        self._next_try = 0.0
        self.on_stored(sample_id, sample, source)

    def _disk_full(self, error: StoreFullError) -> None:
        if not self.full:
            _log.error("sample not stored: %s; samples are dropped until there is space "
                       "(training and prediction go on)", error)
        self.full = True
        self.dropped_full += 1
        self.on_failure("disk", f"sample not stored: {error}")

    def _locked(self, error: DataError) -> None:
        if not self.locked:
            _log.warning("%s; keeping up to %d samples in memory and retrying", error, PENDING_SAMPLES)
        self.locked = True
        self._next_try = self.clock() + self._retry_after
        self._retry_after = min(MAX_RETRY, self._retry_after * 2)
        self.on_failure("store", str(error))
