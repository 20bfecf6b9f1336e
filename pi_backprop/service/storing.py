"""Storing the loop's samples on a card that fails: the store's faults, each said once.

    writer = SampleWriter(keeper, on_stored=publish_sample, on_failure=show_error)
    writer.add(sample, source)      # for every captured sample worth keeping
    writer.retry()                  # every pass of the loop: stores what waited, when due
    writer.retry(now=True)          # before stopping

Samples are stored in batches, one transaction for all that came in ``batch_seconds``
(``store.write_every_seconds``, or ``BATCH_SAMPLES`` of them): a transaction writes whole
pages of the card (the table's, its index's, the id counter's, the file header), and a
sensor window is a fraction of one page. A power cut loses at most the samples of the
batch being gathered.

- A **full disk** drops the sample (the disk cannot hold it): one error line with the space
  left, then quiet; storing resumes by itself with the first sample that fits, and says how
  many were dropped meanwhile. A store opened read-only because the disk was full at the
  start is reopened (``StoreKeeper.reopen_writable``) once there is room.
- A **lock held by another process** (a ``sqlite3`` shell, a long import) keeps the samples
  in memory, at most ``PENDING_SAMPLES`` (the oldest go beyond that), and retries with back-off,
  each try waiting briefly for the lock instead of the store's full busy timeout, so that
  training, prediction and the watchdog go on; one warning names the lock, one line says
  when the samples are in.
- A **damaged file** is the keeper's to repair (``StoreKeeper.failed``): meanwhile the
  samples wait in memory as for a lock, and go into the repaired store.
- Anything else (a read-only file system): the sample is not stored; one line says why,
  until a sample is stored again.

Only the loop's thread calls it.
"""

import collections
import contextlib
import logging
import time
from collections.abc import Callable

from ..exc import DataError, StoreCorruptError, StoreFullError, StoreLockedError
from ..storage.faults import free_text
from ..storage.store import SampleStore
from .capture import Sample
from .storekeeper import StoreKeeper

_log = logging.getLogger(__name__)

BATCH_SECONDS = 5.0        # samples are stored this often (store.write_every_seconds) ...
BATCH_SAMPLES = 64         # ... or once this many wait
PENDING_SAMPLES = 256      # samples kept in memory while the store is locked
FIRST_RETRY = 1.0          # seconds before the first retry; doubles each time
MAX_RETRY = 30.0           # seconds between retries, at most
RETRY_BUSY_TIMEOUT = 0.2   # seconds a retry waits for the lock (the first try waits the store's own)


class SampleWriter:
    """Stores samples in the store that ``keeper`` (``storekeeper.StoreKeeper``) holds.

    on_stored(sample_id, sample, source) : after each sample is in the store
    on_failure(part, message) : every failure ("store" or "disk"), for the error LEDs
    """

    def __init__(self, keeper: StoreKeeper, *, on_stored: Callable[[int, Sample, str], object],
                 on_failure: Callable[[str, str], object], batch_seconds: float = BATCH_SECONDS):
        self.keeper = keeper
        self.batch_seconds = batch_seconds     # seconds a batch gathers before it is stored
        self.on_stored, self.on_failure = on_stored, on_failure
        self.pending = collections.deque()     # (sample, source) not stored yet
        # What the last try met: None, "full", "locked", "damaged" or "failing"; a store opened
        # read-only is there because the disk was full (the service has said so).
        self.trouble = "full" if keeper.store.readonly and not keeper.damaged else None
        self.dropped = 0                       # samples lost in this trouble
        self._next_try = 0.0
        self._retry_after = FIRST_RETRY
        self._batch_started = 0.0             # when the first of the waiting samples came

    @property
    def store(self) -> SampleStore:
        return self.keeper.store

    @property
    def waiting(self) -> int:
        """Samples in memory, waiting for the store."""
        return len(self.pending)

    def add(self, sample: Sample, source: str) -> None:
        """Queue one sample; the batch is stored when it is due."""
        if not self.pending:
            self._batch_started = time.monotonic()
        self.pending.append((sample, source))
        if len(self.pending) > PENDING_SAMPLES:
            self.pending.popleft()
            self.dropped += 1
        self.retry()

    def retry(self, *, now: bool = False) -> None:
        """Store what waits, if it is due (or ``now``: a last try before stopping)."""
        if self.pending and (now or self._due()):
            self._store_pending()

    def _due(self) -> bool:
        clock = time.monotonic()
        if self.trouble is not None:
            return clock >= self._next_try
        return len(self.pending) >= BATCH_SAMPLES or clock - self._batch_started >= self.batch_seconds

    def _store_pending(self) -> None:
        if self.keeper.damaged:
            self.trouble = "damaged"
            self._keep_waiting()
            return
        if self.store.readonly and not self._reopened():
            self._drop_all("disk", "sample not stored: the disk is full")
            return
        while self.pending:
            batch = self._next_batch()
            try:
                short = self.store.busy_timeout(RETRY_BUSY_TIMEOUT) if self.trouble == "locked" else None
                with short or contextlib.nullcontext():
                    ids = self.store.add_samples([sample.x for sample, _ in batch],
                                                 [-1 if sample.label is None else sample.label for sample, _ in batch],
                                                 batch[0][1], time=[sample.time for sample, _ in batch])
            except StoreLockedError as error:
                self._enter("locked", f"{error}; keeping up to {PENDING_SAMPLES} samples in memory and retrying")
                self.on_failure("store", str(error))
                self._back_off()
                return
            except StoreCorruptError as error:
                self.keeper.failed(error)
                # The keeper's repair says what happened.
                self._enter("damaged", f"{error}; keeping up to {PENDING_SAMPLES} samples in memory while it is "
                                       "repaired", logging.DEBUG)
                self._keep_waiting()
                return
            except StoreFullError as error:
                self._enter("full", f"sample not stored: {error}; samples are dropped until there is space "
                                    "(training and prediction go on)", logging.ERROR)
                self._drop_all("disk", f"sample not stored: {error}")
                return
            except DataError as error:
                if len(batch) > 1:          # one of them is at fault: find it, store the others
                    self._store_singly()
                else:
                    self._drop_first(error)
                continue
            for sample_id, (sample, source) in zip(ids, batch):
                self.pending.popleft()
                self.on_stored(sample_id, sample, source)
            self._recovered()

    def _next_batch(self) -> list:
        """The waiting samples at the front that share a source, at most BATCH_SAMPLES."""
        batch = []
        for sample, source in self.pending:
            if len(batch) == BATCH_SAMPLES or (batch and source != batch[0][1]):
                break
            batch.append((sample, source))
        return batch

    def _store_singly(self) -> None:
        """Store the front batch one sample at a time (a batch failed for one of them)."""
        for _ in range(len(self._next_batch())):
            sample, source = self.pending[0]
            try:
                sample_id = self.store.add_sample(sample.x, sample.label, source, time=sample.time)
            except (StoreLockedError, StoreCorruptError, StoreFullError):
                return                      # the next try meets it as a whole again
            except DataError as error:
                self._drop_first(error)
                continue
            self.pending.popleft()
            self.on_stored(sample_id, sample, source)

    def _drop_first(self, error: DataError) -> None:
        """The front sample cannot be stored (``error`` says why): it is dropped."""
        self._enter("failing", f"sample not stored: {error}")
        self.pending.popleft()
        self.dropped += 1
        self.on_failure("store", f"sample not stored: {error}")

    def store_replaced(self) -> None:
        """The keeper put a new store in place: store what waits at the next try."""
        self._next_try, self._retry_after = 0.0, FIRST_RETRY

    def _keep_waiting(self) -> None:
        """Back off, with the samples in memory (the store is locked or being repaired)."""
        self.on_failure("store", f"{self.waiting} samples waiting for the sample store")
        self._back_off()

    def _reopened(self) -> bool:
        """Try the read-only store writable again, when a retry is due."""
        if time.monotonic() < self._next_try:
            return False
        try:
            self.keeper.reopen_writable()
        except StoreFullError:
            self._back_off()
            return False
        return True

    def _enter(self, trouble: str, message: str, level: int = logging.WARNING) -> None:
        """Say ``message`` if this trouble is new."""
        if self.trouble != trouble:
            _log.log(level, "%s", message)
            self.trouble = trouble

    def _drop_all(self, part: str, message: str) -> None:
        self.dropped += len(self.pending)
        self.pending.clear()
        self.on_failure(part, message)

    def _back_off(self) -> None:
        self._next_try = time.monotonic() + self._retry_after
        self._retry_after = min(MAX_RETRY, self._retry_after * 2)

    def _recovered(self) -> None:
        if self.trouble == "full":
            _log.info("storing samples again (%s); %d dropped while the disk was full",
                      free_text(self.store.path), self.dropped)
        elif self.trouble in ("locked", "damaged"):
            lost = f", {self.dropped} lost (more than {PENDING_SAMPLES} waited)" if self.dropped else ""
            again = "writable again" if self.trouble == "locked" else "repaired"
            _log.info("sample store %s %s: the waiting samples are stored%s", self.store.path, again, lost)
        elif self.trouble == "failing":
            _log.info("storing samples again; %d were not stored", self.dropped)
        self.trouble, self.dropped = None, 0
        self._next_try, self._retry_after = 0.0, FIRST_RETRY
