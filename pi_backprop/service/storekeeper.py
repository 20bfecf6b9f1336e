"""The service's sample store on a card that fails: opened, watched, repaired, replaced.

    keeper = StoreKeeper(path, definition, bounds, on_replaced=forget_training_data)
    store = keeper.open()          # a damaged file is repaired first; a full disk opens read-only
    keeper.watch()                 # every pass of the loop
    keeper.failed(error)           # a query failed: a damaged file is repaired at the next watch

- **Damaged** (SQLite reports corruption: at the start, by a quick check of every page, or
  when any query fails that way): the file moves aside as ``samples.db.corrupt-<UTC time>``
  and every readable sample goes into a fresh store in its place (``storage.salvage``); one
  line says how many were saved and lost. If that cannot be done now (a full disk, another
  process has the file open), the damaged store stays open read-only and the repair is tried
  again later.
- **Deleted or replaced** while the service runs (its file gone, or another file at its
  path): noticed within ``WATCH_SECONDS``, one warning, a fresh store at the path.
- **Full at the start**: opened read-only, so that the service predicts; ``reopen_writable``
  is the writer's way back once there is room.

``store`` is the store in use now; ``on_replaced(store)`` hears of every new one. Only the
loop's thread calls it.
"""

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..exc import DataError, StoreCorruptError, StoreFullError
from ..modeldef import ModelDefinition
from ..storage import salvage
from ..storage.store import SampleStore

_log = logging.getLogger(__name__)

WATCH_SECONDS = 30.0        # how often the store's file is looked for
FIRST_REPAIR_RETRY = 30.0   # seconds before a failed repair is tried again; doubles each time
MAX_REPAIR_RETRY = 600.0


class StoreKeeper:
    """The sample store at ``path`` for the model ``definition`` (its classes, its input
    shape), with ``bounds`` (``max_per_class``, ``max_bytes``, ``validation_fraction``)."""

    def __init__(self, path: Path, definition: ModelDefinition, bounds: dict, *,
                 on_replaced: Callable[[SampleStore], object] = lambda store: None):
        self.path, self.definition, self.bounds = Path(path), definition, dict(bounds)
        self.on_replaced = on_replaced
        self.store: SampleStore | None = None
        self.repairs = 0                 # damaged files moved aside by this process
        self._identity = None            # (st_dev, st_ino) of the file the store opened
        self._next_watch = 0.0
        self._repair_due = False
        self._next_repair = 0.0
        self._repair_retry = FIRST_REPAIR_RETRY
        self._salvaged = False           # salvaged, but the fresh store did not open yet
        self._labelled = None

    # -- opening ------------------------------------------------------------------------

    def open(self) -> SampleStore:
        """Open the store at the start: repaired first if damaged, read-only on a full disk.
        ``DataError`` if it holds another model's classes or samples of another shape."""
        problems = salvage.check(self.path, quick=True) if self.path.is_file() else []
        if problems:
            self._repair(problems[0])
        if self.store is None:
            try:
                self._use(self._open_writable())
            except StoreFullError as error:   # start all the same: predict, and store once there is room
                _log.error("%s; predicting without storing samples until there is space", error)
                self._use(SampleStore(self.path, readonly=True))
            except StoreCorruptError as error:   # no SQLite file at all now
                self._repair(str(error.__cause__ or error))
                if self.store is None:
                    raise
        try:
            self._check_fits(self.store)
        except StoreCorruptError as error:
            self.failed(error)
        return self.store

    def _open_writable(self) -> SampleStore:
        store = SampleStore(self.path, **self.bounds)
        try:
            store.set_class_names(self.definition.classes)
        except BaseException:
            store.close()
            raise
        return store

    def reopen_writable(self) -> SampleStore:
        """The store writable again, in place of one opened read-only on a full disk
        (``StoreFullError`` while the disk is still full)."""
        store = self._open_writable()
        self._replace(store)
        return store

    def _check_fits(self, store: SampleStore) -> None:
        definition = self.definition
        if store.class_names not in ((), tuple(definition.classes)):
            raise DataError(f"{self.path} holds classes {list(store.class_names)}, not "
                            f"{list(definition.classes)} of model {definition.name!r}")
        if store.sample_shape not in (None, definition.input_shape):
            raise DataError(f"{self.path} holds samples of shape {store.sample_shape}, but model "
                            f"{definition.name!r} takes {definition.input_shape}; export and clear it first "
                            "(pi-backprop data export/clear) or set store.path")

    def _use(self, store: SampleStore) -> None:
        self.store = store
        try:
            stat = os.stat(self.path)
            self._identity = (stat.st_dev, stat.st_ino)
        except OSError:
            self._identity = None
        self._next_watch = time.monotonic() + WATCH_SECONDS

    def _replace(self, store: SampleStore) -> None:
        old = self.store
        self._use(store)
        if old is not None and old is not store:
            old.close()
        self.on_replaced(store)

    def close(self) -> None:
        """Close the store in use; idempotent."""
        if self.store is not None:
            self.store.close()

    # -- while running ------------------------------------------------------------------

    @property
    def damaged(self) -> bool:
        """The store's file was found damaged and is not repaired yet."""
        return self._repair_due

    def failed(self, error: DataError) -> None:
        """A store operation failed with ``error``: a damaged file is repaired at the next
        ``watch``; other faults are the caller's to handle."""
        if isinstance(error, StoreCorruptError) and not self._repair_due:
            self._repair_due = True
            self._next_repair = 0.0

    def watch(self) -> None:
        """Repair a store found damaged, when due; every ``WATCH_SECONDS``, a fresh store if
        its file was deleted or replaced."""
        now = time.monotonic()
        if self._repair_due and now >= self._next_repair:
            self._repair("a query failed")
            return
        if now < self._next_watch:
            return
        self._next_watch = now + WATCH_SECONDS
        try:
            stat = os.stat(self.path)
            identity = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            identity = None
        except OSError:
            return   # cannot look: say nothing rather than something untrue
        if identity is not None and identity == self._identity:
            return
        what = "deleted" if identity is None else "replaced by another file"
        _log.warning("sample store %s was %s while the service ran: %s", self.path, what,
                     "creating a fresh one" if identity is None else "opening that one")
        self.store.close()
        self._identity = identity   # said once for this file, whatever comes of it
        if identity is None:
            for suffix in ("-wal", "-shm"):   # what is left of the deleted store's journal
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
        try:
            store = self._open_writable()
        except StoreCorruptError as error:
            self.failed(error)       # repaired at the next watch
            return
        except DataError as error:
            _log.error("no sample store now: %s", error)
            return
        try:
            self._check_fits(store)
        except DataError as error:
            store.close()
            _log.error("no sample store now: %s", error)
            return
        self._replace(store)

    def _repair(self, reason: str) -> None:
        """Move the damaged file aside, salvage it into a fresh store and use that; if that
        cannot be done now, use the damaged file read-only and try again later."""
        if self.store is not None:
            self.store.close()
        if not self._salvaged:
            try:
                report = salvage.salvage(self.path, class_names=tuple(self.definition.classes), bounds=self.bounds,
                                         busy_hint="the repair is tried again later", force=True)
            except (DataError, OSError) as error:
                self._retry_later(f"sample store {self.path} is damaged ({reason}) and was not repaired: {error}")
                return
            _log.error("%s", report.text())
            self.repairs += 1
            self._salvaged = True
        try:
            store = self._open_writable()
        except DataError as error:
            self._retry_later(f"the repaired sample store {self.path} cannot be opened: {error}")
            return
        self._salvaged = False
        self._repair_due, self._repair_retry = False, FIRST_REPAIR_RETRY
        self._replace(store)

    def _retry_later(self, message: str) -> None:
        _log.error("%s; trying again in %.0f s", message, self._repair_retry)
        self._repair_due, self._next_repair = True, time.monotonic() + self._repair_retry
        self._repair_retry = min(MAX_REPAIR_RETRY, self._repair_retry * 2)
        if not self._salvaged:   # meanwhile the damaged file, read-only, for what it still gives
            with contextlib.suppress(DataError):
                self._replace(SampleStore(self.path, readonly=True))

    def labelled(self) -> int | None:
        """Labelled samples in the store (the last count that could be read, while it fails)."""
        try:
            self._labelled = int(self.store.class_counts("all").sum())
        except DataError as error:
            self.failed(error)
        return self._labelled
