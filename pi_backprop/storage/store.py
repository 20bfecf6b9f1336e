"""The sample store: labelled (and unlabelled) samples, class names and training metrics in
one SQLite file, bounded so that an SD card never fills.

    with SampleStore(path, max_per_class=500, max_bytes=100_000_000) as store:
        store.set_class_names(["still", "walking", "tapping", "shaking"])
        store.add_sample(x, label=2, source="sensor")          # x: any numeric array
        xv, yv = store.load_arrays("val")
        store.record_metrics(step=40, loss=0.31, accuracy=0.88)

Samples are raw little-endian bytes with their shape and dtype (never pickled), read back as
float32. One process writes (the service); any number read at the same time: the file is in
WAL mode and readers open it read-only (``SampleStore(path, readonly=True)``).

The train/validation split is a pure function of a sample's id (``split``; the store
records the rule's offset in its settings), so it stays put as samples come and go. Samples
are kept in blocks of ``split.SPLIT_BLOCK`` consecutive ids: samples captured a second apart
look alike, and keeping them on the same side keeps the validation score honest.

Bounds, enforced in the same transaction as every insert: at most ``max_per_class`` samples
per class (unlabelled samples count as one more class), oldest dropped first; and at most
``max_bytes`` of sample data, dropping the oldest unlabelled samples first, then the oldest
samples of the largest class, so the classes stay balanced.

Durability: ``synchronous=NORMAL`` in WAL mode keeps the file consistent through a power cut
and may lose only the last few samples; it saves the SD card an fsync per sample.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import os
import sqlite3
import threading
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self, TypeVar, cast

import numpy as np

from .. import paths
from ..exc import DataError, ShapeError, StoreCorruptError, StoreFullError
from .atomic import atomic_write
from .faults import SQLITE_CANTOPEN, SQLITE_IOERR, SQLITE_NOTADB, primary_code, store_error
from .npfiles import load_numpy
from .split import LEGACY_OFFSET, SPLIT_OFFSET, SQL_IS_VALIDATION, VALIDATION_FRACTION, threshold

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

SCHEMA_VERSION = 1
APPLICATION_ID = 0x70696270  # "pibp": marks the file as ours
DEFAULT_FILENAME = "samples.db"
MAX_METRIC_ROWS = 100_000
BUSY_TIMEOUT = 10.0  # seconds a reader or writer waits for a lock before giving up

_log = logging.getLogger(__name__)

_CREATE = """
CREATE TABLE classes (
    label INTEGER PRIMARY KEY,             -- class index, 0..n-1, the model's output order
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so the split never moves
    time REAL NOT NULL,                    -- Unix time, seconds
    source TEXT NOT NULL,
    label INTEGER REFERENCES classes(label),  -- NULL: unlabelled
    shape TEXT NOT NULL,                   -- JSON list of ints
    dtype TEXT NOT NULL,                   -- numpy dtype string, little-endian ("<f4", "|u1")
    nbytes INTEGER NOT NULL,
    data BLOB NOT NULL
);
-- Covers the per-class counts and byte sums of every insert without reading the blobs.
CREATE INDEX samples_by_label ON samples(label, id, nbytes);
CREATE TABLE metrics (
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    loss REAL, accuracy REAL, val_loss REAL, val_accuracy REAL, lr REAL
);
CREATE INDEX metrics_by_step ON metrics(step);
CREATE TABLE settings (
    key TEXT PRIMARY KEY,                  -- max_per_class, max_bytes, validation_fraction
    value NUMERIC NOT NULL
);
"""


def default_store_path() -> Path:
    """``samples.db`` in the state directory."""
    return paths.state_dir() / DEFAULT_FILENAME


_SPLITS = {"train": f"NOT {SQL_IS_VALIDATION}", "val": SQL_IS_VALIDATION, "all": "1"}


_Method = TypeVar("_Method", bound=Callable)


def _guarded(doing: str) -> Callable[[_Method], _Method]:
    """A store method whose ``sqlite3.Error`` becomes the one-line ``DataError`` that says what
    happened (``faults.store_error``: full, locked, damaged, other) while ``doing`` it."""
    def wrap(method: _Method) -> _Method:
        @functools.wraps(method)
        def guarded(self: "SampleStore", *args: object, **kwargs: object) -> object:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as error:
                raise store_error(error, self.path, doing, busy_seconds=BUSY_TIMEOUT) from error
        return cast(_Method, guarded)
    return wrap


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row of training history. Accuracies are fractions in [0, 1]; time is Unix seconds."""

    step: int
    time: float
    loss: float | None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None


@dataclasses.dataclass(frozen=True)
class SalvagedSample:
    """A sample read back from a damaged store: its id, Unix time, source, label (None:
    unlabelled) and array, as it was stored."""

    id: int
    time: float
    source: str
    label: int | None
    x: np.ndarray


@dataclasses.dataclass(frozen=True)
class StoreStats:
    """What ``pi-backprop data stats`` prints. ``per_class`` maps a class name to (train, val)."""

    path: str
    file_bytes: int
    sample_shape: tuple | None
    sample_dtype: str | None
    class_names: tuple
    per_class: dict
    unlabelled: int
    data_bytes: int
    last_metric: Metric | None
    max_per_class: int
    max_bytes: int
    validation_fraction: float

    @property
    def labelled(self) -> int:
        return sum(train + val for train, val in self.per_class.values())


class SampleStore:
    """A bounded SQLite store of samples, class names and metrics. See the module docstring.

    path : the ``.db`` file (created with its directory unless ``readonly``); default
        ``default_store_path()``.
    max_per_class : samples kept per class, unlabelled samples counting as one class.
    max_bytes : sample data kept, in bytes (the file is a little larger: SQLite's pages).
    validation_fraction : share of sample ids in the validation split, in [0, 0.9].
    readonly : open for reading only (``mode=ro``); safe while the service writes.

    The three settings are saved in the file by a writer that is given them, and a store
    opened without them uses the saved ones (else ``DEFAULTS``): so ``pi-backprop data
    import`` bounds the store exactly as the service configured it.
    """

    DEFAULTS = {"max_per_class": 500, "max_bytes": 100_000_000, "validation_fraction": VALIDATION_FRACTION}

    def __init__(self, path: Path | str | None = None, *, max_per_class: int | None = None,
                 max_bytes: int | None = None, validation_fraction: float | None = None, readonly: bool = False):
        self.path = Path(path) if path is not None else default_store_path()
        self.readonly = readonly
        self.immutable = False    # read-only, without the WAL: no room for its -shm file
        given = {"max_per_class": max_per_class, "max_bytes": max_bytes,
                 "validation_fraction": validation_fraction}
        given = {key: value for key, value in given.items() if value is not None}
        self.check_settings(**{**self.DEFAULTS, **given})
        self._lock = threading.RLock()
        self._db = None
        try:
            self._db = self._connect()
            self._check_or_create_schema()
            saved = dict(self._conn().execute("SELECT key, value FROM settings"))
            settings = {**self.DEFAULTS, **saved, **given}
            self.max_per_class = int(settings["max_per_class"])
            self.max_bytes = int(settings["max_bytes"])
            self.validation_fraction = float(settings["validation_fraction"])
            self.split_offset = int(saved.get("split_offset", LEGACY_OFFSET))
            if not readonly and any(saved.get(key) != value for key, value in given.items()):
                try:
                    self._save_settings()
                    self._apply_lowered_bounds(saved)
                except StoreFullError as error:   # a full disk must not keep the service from starting
                    _log.warning("sample store bounds not saved: %s; they apply to this run", error)
        except sqlite3.Error as error:
            self.close()
            if primary_code(error) == SQLITE_NOTADB:
                raise StoreCorruptError(f"cannot open sample store {self.path}: {error} (the file is not an "
                                        "SQLite database, or its first page is damaged: pi-backprop data check "
                                        f"--repair --db {self.path})") from error
            if self._hint(error):
                raise DataError(f"cannot open sample store {self.path}: {error}{self._hint(error)}") from error
            raise store_error(error, self.path, "open the sample store", busy_seconds=BUSY_TIMEOUT) from error
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------

    def _connect(self):
        if self.readonly:
            if not self.path.is_file():
                raise DataError(f"no sample store at {self.path} (the service creates it; "
                                "give another one with --db)")
            uri = self.path.resolve().as_uri() + "?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError as error:
                if not (primary_code(error) == SQLITE_IOERR
                        or (primary_code(error) == SQLITE_CANTOPEN and _read_only_file_system(self.path))):
                    raise
                # No room for the -shm file (a full disk), or a read-only file system (no one
                # writes there): read the file as it is, without the WAL's newest pages (a full
                # disk must not keep predictions from starting).
                db.close()
                db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None,
                                     check_same_thread=False)
                self.immutable = True
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        if not self.readonly:
            # auto_vacuum only takes effect before the first table is created; on a store
            # that exists, setting it would write (and fail on a full disk).
            if db.execute("PRAGMA page_count").fetchone()[0] == 0:
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise DataError(f"cannot use WAL mode for {self.path} (a network file system?)")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA journal_size_limit = 8000000")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _check_or_create_schema(self):
        db = self._db
        if not self.readonly:
            db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            app = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and app == 0 and tables == 0:
                if self.readonly:
                    raise DataError(f"{self.path} is an empty database, not a sample store yet")
                # One statement at a time: executescript() would commit the transaction.
                for statement in _CREATE.split(";"):
                    if statement.strip():
                        db.execute(statement)
                # New stores record the split rule's offset; one without it predates 0.2.
                db.execute("INSERT INTO settings (key, value) VALUES ('split_offset', ?)", (SPLIT_OFFSET,))
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif app != APPLICATION_ID:
                raise DataError(f"{self.path} is an SQLite file but not a pi-backprop sample store")
            elif version > SCHEMA_VERSION:
                raise DataError(f"{self.path} has sample store version {version}, written by a newer "
                                f"pi-backprop; this one reads version {SCHEMA_VERSION}: upgrade pi-backprop")
            elif version != SCHEMA_VERSION:
                raise DataError(f"{self.path} has unknown sample store version {version}")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if db.in_transaction:
            db.execute("COMMIT")

    def _hint(self, error: sqlite3.Error) -> str:
        if self.readonly and "unable to open" in str(error):
            if os.geteuid() == 0:   # root may open anything: not a matter of users
                return " (SQLite cannot create or open its -shm file beside it)"
            return (" (a reader needs the store's directory or its -shm file to be accessible: "
                    "run as the service user, e.g. sudo -u pi-backprop)")
        return ""

    # -- resource ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; idempotent."""
        with getattr(self, "_lock", threading.RLock()):
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.readonly else "read-write"
        return f"<SampleStore {str(self.path)!r} {mode}>"

    @contextlib.contextmanager
    def busy_timeout(self, seconds: float) -> Iterator[None]:
        """Within the block, wait at most ``seconds`` for another process's lock (a retry that
        must not hold up its caller), instead of ``BUSY_TIMEOUT``."""
        with self._lock:
            db = self._conn()
            db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
            try:
                yield
            finally:
                if self._db is db:
                    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise DataError(f"sample store {self.path} is closed")
        return self._db

    def _write(self) -> "_Transaction":
        """A context for one write transaction (BEGIN IMMEDIATE .. COMMIT, or ROLLBACK)."""
        if self.readonly:
            raise DataError(f"sample store {self.path} is open read-only")
        return _Transaction(self._conn())

    # -- class names ---------------------------------------------------------------------

    @property
    @_guarded("read the class names")
    def class_names(self) -> tuple:
        """Class names in label order (label i is ``class_names[i]``); () if not set yet."""
        with self._lock:
            rows = self._conn().execute("SELECT name FROM classes ORDER BY label").fetchall()
        return tuple(name for (name,) in rows)

    @_guarded("store the class names")
    def set_class_names(self, names: Iterable[str]) -> None:
        """Set the class names, or check that they equal the stored ones (DataError if not)."""
        names = tuple(str(name) for name in names)
        if not names or len(set(names)) != len(names):
            raise DataError(f"class names must be distinct and at least one, got {list(names)}")
        with self._lock, self._write() as db:
            stored = tuple(n for (n,) in db.execute("SELECT name FROM classes ORDER BY label"))
            if stored == names:
                return
            if stored:
                raise DataError(
                    f"sample store {self.path} holds classes {list(stored)}, not {list(names)}: "
                    "keep the model's classes, or save and empty the store first "
                    "(pi-backprop data export FILE.npz; pi-backprop data clear --yes --classes)")
            db.executemany("INSERT INTO classes (label, name) VALUES (?, ?)", enumerate(names))

    # -- samples -------------------------------------------------------------------------

    @property
    @_guarded("read the sample shape")
    def sample_shape(self) -> tuple | None:
        """The shape every stored sample has, or None while the store is empty."""
        with self._lock:
            row = self._conn().execute("SELECT shape FROM samples LIMIT 1").fetchone()
        return None if row is None else tuple(json.loads(row[0]))

    @_guarded("store a sample")
    def add_sample(self, x: "ArrayLike", label: int | None = None, source: str = "", *,
                   time: float | None = None) -> int:
        """Store one sample and return its id; drops old samples if a bound is exceeded.

        x : a numeric array (any shape, the same for every sample; float or integer dtype).
        label : class index in [0, len(class_names)), or None for an unlabelled sample.
        source : where it came from ("camera", "sensor", "import:file.npz"...).
        time : Unix time in seconds (default now).
        """
        with self._lock:
            return self._add_many([x], [label], source, time)[0]

    @_guarded("store samples")
    def add_samples(self, x: np.ndarray | Sequence["ArrayLike"], y: "ArrayLike", source: str = "", *,
                    time: float | Sequence[float] | None = None) -> list[int]:
        """Store many samples (``x`` (N, ...), ``y`` (N,) with -1 for unlabelled) in one
        transaction; ``time``: one Unix time for all, or one per sample (default now)."""
        labels = [None if int(label) < 0 else int(label) for label in np.asarray(y).reshape(-1)]
        if len(labels) != len(x):
            raise ShapeError(f"{len(x)} samples but {len(labels)} labels")
        with self._lock:
            return self._add_many(x, labels, source, time)

    def _add_many(self, xs: np.ndarray | Sequence["ArrayLike"], labels: Sequence[int | None], source: str,
                  time: float | Sequence[float] | None) -> list[int]:
        now = _time.time() if time is None else time
        times = [float(t) for t in now] if isinstance(now, Sequence | np.ndarray) else [float(now)] * len(labels)
        if len(times) != len(labels):
            raise ShapeError(f"{len(labels)} samples but {len(times)} times")
        with self._write() as db:
            count = len(self.class_names)
            stored_shape = self.sample_shape
            rows = []
            for x, label, now in zip(xs, labels, times):
                x = _as_sample(x)
                if stored_shape is None:
                    stored_shape = x.shape
                elif x.shape != stored_shape:
                    raise ShapeError(f"sample has shape {x.shape} but the store at {self.path} holds "
                                     f"shape {stored_shape} (a different model? export and clear it first)")
                if label is not None and not (isinstance(label, (int, np.integer)) and 0 <= label < count):
                    what = f"the store's {count} classes" if count else "no class names (set them first)"
                    raise DataError(f"label {label!r} is not a class index: the store has {what}")
                rows.append((now, str(source), None if label is None else int(label),
                             json.dumps(list(x.shape)), x.dtype.str, x.nbytes, x.tobytes()))
            ids = []
            for row in rows:
                cursor = db.execute("INSERT INTO samples (time, source, label, shape, dtype, nbytes, data) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                ids.append(cursor.lastrowid)
            self._enforce_limits(db)
        return ids

    @_guarded("apply the store's bounds")
    def set_limits(self, *, max_per_class: int | None = None, max_bytes: int | None = None) -> int:
        """Change the bounds (e.g. after a config reload) and apply them now; returns samples dropped."""
        new_per_class = self.max_per_class if max_per_class is None else int(max_per_class)
        new_bytes = self.max_bytes if max_bytes is None else int(max_bytes)
        self.check_settings(new_per_class, new_bytes)
        with self._lock:
            self.max_per_class, self.max_bytes = new_per_class, new_bytes
            if self.readonly:
                return 0
            self._save_settings()
            with self._write() as db:
                return self._enforce_limits(db)

    @staticmethod
    def check_settings(max_per_class: int, max_bytes: int, validation_fraction: float = VALIDATION_FRACTION) -> None:
        """``DataError`` unless the bounds are positive and the fraction is in [0, 0.9]."""
        if int(max_per_class) < 1 or int(max_bytes) < 1:
            raise DataError(f"store bounds must be positive, got max_per_class={max_per_class}, "
                            f"max_bytes={max_bytes}")
        if not 0 <= validation_fraction <= 0.9:
            raise DataError(f"validation fraction must be in [0, 0.9], got {validation_fraction}")

    @_guarded("save the store's bounds")
    def _save_settings(self):
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                           [("max_per_class", self.max_per_class), ("max_bytes", self.max_bytes),
                            ("validation_fraction", self.validation_fraction)])

    @_guarded("apply the store's bounds")
    def _apply_lowered_bounds(self, saved: dict) -> None:
        """Bounds given lower than the saved ones drop samples now, and say how many."""
        lowered = [f"{key} {int(saved[key])} -> {getattr(self, key)}" for key in ("max_per_class", "max_bytes")
                   if key in saved and getattr(self, key) < saved[key]]
        if lowered:
            with self._write() as db:
                dropped = self._enforce_limits(db)
            if dropped:
                _log.warning("sample store %s: bounds lowered (%s): %d oldest samples dropped", self.path,
                             ", ".join(lowered), dropped)

    def _enforce_limits(self, db: sqlite3.Connection) -> int:
        """Delete what exceeds the bounds, oldest first; returns how many samples went."""
        groups = {label: [count, size] for label, count, size in
                  db.execute("SELECT label, count(*), sum(nbytes) FROM samples GROUP BY label")}
        total = sum(size for _, size in groups.values())
        oldest = {label: _oldest_ids(db, label) for label in groups}
        victims = []

        def drop(label: int | None) -> None:
            nonlocal total
            sample_id, size = next(oldest[label])
            victims.append((sample_id,))
            groups[label][0] -= 1
            groups[label][1] -= size
            total -= size

        for label in groups:
            while groups[label][0] > self.max_per_class:
                drop(label)
        while total > self.max_bytes:
            if groups.get(None, (0,))[0] > 0:
                drop(None)
            else:
                # The largest class; on a tie the one with the oldest sample (lowest label).
                drop(max((label for label in groups if groups[label][0] > 0),
                         key=lambda label: (groups[label][0], -label)))
        db.executemany("DELETE FROM samples WHERE id = ?", victims)
        return len(victims)

    @_guarded("store the salvaged samples")
    def restore_samples(self, samples: Iterable["SalvagedSample"], *, next_id: int = 0,
                        split_offset: int = SPLIT_OFFSET) -> list[int]:
        """Store samples read from a damaged store (``salvage``) into this new, empty one, each
        with its own id, time and source, so that the split of the samples stays put; new ids
        continue after ``next_id`` (the damaged store's highest). All are kept, beyond the
        bounds too (the next sample stored applies them). Returns the ids stored."""
        ids = []
        with self._lock, self._write() as db:
            if db.execute("SELECT count(*) FROM samples").fetchone()[0]:
                raise DataError(f"sample store {self.path} is not empty: salvaged samples go into a new store")
            for sample in samples:
                x = _as_sample(sample.x)
                db.execute("INSERT INTO samples (id, time, source, label, shape, dtype, nbytes, data) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (int(sample.id), float(sample.time), str(sample.source), sample.label,
                            json.dumps(list(x.shape)), x.dtype.str, x.nbytes, x.tobytes()))
                ids.append(int(sample.id))
            db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'samples'", (int(next_id),))
            if db.execute("SELECT changes()").fetchone()[0] == 0:
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('samples', ?)", (int(next_id),))
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('split_offset', ?)", (int(split_offset),))
            self.split_offset = int(split_offset)
        return ids

    @_guarded("read the sample ids")
    def sample_ids(self) -> list[int]:
        """The id of every sample, oldest first."""
        with self._lock:
            return [row[0] for row in self._conn().execute("SELECT id FROM samples ORDER BY id")]

    @_guarded("store the metrics")
    def record_metric_rows(self, rows: Iterable[tuple]) -> int:
        """Append rows of training history in one transaction (the service keeps a minute of
        them; a salvage copies them): (step, time, loss, accuracy, val_loss, val_accuracy, lr),
        accuracies as fractions, time in Unix seconds. Returns how many."""
        count = 0
        with self._lock, self._write() as db:
            for row in rows:
                db.execute("INSERT INTO metrics (step, time, loss, accuracy, val_loss, val_accuracy, lr) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(row))
                count += 1
            db.execute("DELETE FROM metrics WHERE rowid <= (SELECT max(rowid) FROM metrics) - ?",
                       (MAX_METRIC_ROWS,))
        return count

    @_guarded("count the samples")
    def counts(self, split: str = "all") -> dict:
        """Samples per label in a split ("train", "val", "all"); the key None counts unlabelled ones."""
        condition = self._split_condition(split)
        with self._lock:
            rows = self._conn().execute(
                f"SELECT label, count(*) FROM samples WHERE {condition} GROUP BY label",
                self._split_params).fetchall()
        return dict(rows)

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Labelled samples per class in a split: int64, shape (len(class_names),)."""
        result = np.zeros(len(self.class_names), dtype=np.int64)
        for label, count in self.counts(split).items():
            if label is not None:
                result[label] = count
        return result

    @_guarded("count the samples")
    def __len__(self) -> int:
        with self._lock:
            return self._conn().execute("SELECT count(*) FROM samples").fetchone()[0]

    @_guarded("count the samples")
    def labelled_version(self) -> tuple[int, int]:
        """(count, newest id) of the labelled samples: changes with every labelled sample
        stored or deleted, also when the bounds keep the count the same."""
        with self._lock:
            count, newest = self._conn().execute(
                "SELECT count(*), coalesce(max(id), 0) FROM samples WHERE label IS NOT NULL").fetchone()
        return int(count), int(newest)

    @_guarded("read the samples")
    def load_arrays(self, split: str = "train", *, unlabelled: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All samples of a split, oldest first.

        Returns x : float32, shape (N, *sample_shape); y : int64, shape (N,), -1 for an
        unlabelled sample (included only with ``unlabelled=True``).
        """
        condition = self._split_condition(split)
        if not unlabelled:
            condition += " AND label IS NOT NULL"
        with self._lock:
            db = self._conn()
            # One read transaction, so the count and the rows agree while the service writes.
            db.execute("BEGIN")
            try:
                params = self._split_params
                count = db.execute(f"SELECT count(*) FROM samples WHERE {condition}", params).fetchone()[0]
                rows = db.execute(f"SELECT label, shape, dtype, data FROM samples WHERE {condition} "
                                  "ORDER BY id", params)
                return _fill_arrays(rows, count, self.sample_shape)
            finally:
                _end_read(db)

    @_guarded("read the samples")
    def newest(self, label: int, count: int) -> np.ndarray:
        """The newest ``count`` samples of class ``label``, oldest first: float32 (k, *sample_shape).

        Reads only those rows, so a report on a full store stays small in memory.
        """
        with self._lock:
            rows = self._conn().execute(
                "SELECT label, shape, dtype, data FROM samples WHERE label = ? ORDER BY id DESC LIMIT ?",
                (int(label), int(count))).fetchall()
        x, _ = _fill_arrays(rows[::-1], len(rows), self.sample_shape)
        return x

    @_guarded("read the samples")
    def newest_samples(self, label: int | None, count: int) -> list[tuple[int, float, np.ndarray]]:
        """The newest ``count`` samples of class ``label`` (None: unlabelled ones), newest
        first, as (id, Unix time, x float32 sample_shape)."""
        condition = "label IS NULL" if label is None else "label = ?"
        params = () if label is None else (int(label),)
        with self._lock:
            rows = self._conn().execute(
                f"SELECT id, time, label, shape, dtype, data FROM samples WHERE {condition} "
                "ORDER BY id DESC LIMIT ?", (*params, int(count))).fetchall()
        x, _ = _fill_arrays([row[2:] for row in rows], len(rows), self.sample_shape)
        return [(int(row[0]), float(row[1]), sample) for row, sample in zip(rows, x)]

    @_guarded("read the samples")
    def load_split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every labelled sample with its side of the split: x float32 (N, *sample_shape),
        y int64 (N,), eval_mask bool (N,) (True: validation). Training samples come first."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")   # one read transaction: the count and the rows agree
            try:
                params = self._split_params
                count, held_out = db.execute(f"SELECT count(*), total({SQL_IS_VALIDATION}) FROM samples "
                                             "WHERE label IS NOT NULL", params).fetchone()
                # Training rows first, then validation, filled straight into one array: the
                # data are held once, not twice (a full store is ~100 MB; a Zero 2 W has 512 MB).
                rows = db.execute(f"SELECT label, shape, dtype, data FROM samples WHERE label IS NOT NULL "
                                  f"ORDER BY {SQL_IS_VALIDATION}, id", params)
                x, y = _fill_arrays(rows, count, self.sample_shape)
                eval_mask = np.arange(len(y)) >= count - int(held_out)
                return x, y, eval_mask
            finally:
                _end_read(db)

    @property
    def _split_params(self):
        return {"threshold": threshold(self.validation_fraction), "offset": self.split_offset}

    @staticmethod
    def _split_condition(split: str) -> str:
        try:
            return _SPLITS[split]
        except KeyError:
            raise DataError(f"split must be train, val or all, got {split!r}") from None

    @_guarded("delete a sample")
    def delete_sample(self, sample_id: int) -> bool:
        """Delete the sample with this id (a mislabelled one); True if it was there."""
        with self._lock, self._write() as db:
            return db.execute("DELETE FROM samples WHERE id = ?", (int(sample_id),)).rowcount > 0

    @_guarded("delete a class's samples")
    def delete_class(self, label: int) -> int:
        """Delete every sample of class ``label``; returns how many there were."""
        with self._lock, self._write() as db:
            deleted = db.execute("DELETE FROM samples WHERE label = ?", (int(label),)).rowcount
        with self._lock:
            self._conn().execute("PRAGMA incremental_vacuum")  # give the space back to the card
        return deleted

    @_guarded("clear the store")
    def clear(self, *, classes: bool = False) -> int:
        """Delete every sample and metric (and the class names if ``classes``); returns samples deleted."""
        with self._lock, self._write() as db:
            deleted = db.execute("DELETE FROM samples").rowcount
            db.execute("DELETE FROM metrics")
            if classes:
                db.execute("DELETE FROM classes")
        with self._lock:
            self._conn().execute("PRAGMA incremental_vacuum")  # give the space back to the card
        return deleted

    # -- metrics -------------------------------------------------------------------------

    @_guarded("store the metrics")
    def record_metrics(self, step: int, loss: float | None, accuracy: float | None = None,
                       val_loss: float | None = None, val_accuracy: float | None = None,
                       lr: float | None = None, *, time: float | None = None) -> None:
        """Append one row of training history (accuracies as fractions, time in Unix seconds)."""
        row = (int(step), _time.time() if time is None else float(time),
               *(None if v is None else float(v) for v in (loss, accuracy, val_loss, val_accuracy, lr)))
        with self._lock, self._write() as db:
            db.execute("INSERT INTO metrics (step, time, loss, accuracy, val_loss, val_accuracy, lr) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            # Bounded like the samples: the oldest rows go.
            db.execute("DELETE FROM metrics WHERE rowid <= (SELECT max(rowid) FROM metrics) - ?",
                       (MAX_METRIC_ROWS,))

    @_guarded("read the metrics")
    def metrics(self, *, since_step: int | None = None) -> list[Metric]:
        """Training history in the order it was recorded (optionally only rows with step >= since_step)."""
        query = "SELECT step, time, loss, accuracy, val_loss, val_accuracy, lr FROM metrics"
        params = ()
        if since_step is not None:
            query += " WHERE step >= ?"
            params = (int(since_step),)
        with self._lock:
            return [Metric(*row) for row in self._conn().execute(query + " ORDER BY rowid", params)]

    @_guarded("drop metrics")
    def drop_metrics_after(self, step: int) -> int:
        """Forget history beyond ``step`` (after a rollback or a resume from an older checkpoint)."""
        with self._lock, self._write() as db:
            return db.execute("DELETE FROM metrics WHERE step > ?", (int(step),)).rowcount

    # -- summaries, export, import -------------------------------------------------------

    @_guarded("read the store's statistics")
    def stats(self) -> StoreStats:
        """Counts per class and split, sizes and the last metric row."""
        names = self.class_names
        train, val = self.counts("train"), self.counts("val")
        with self._lock:
            db = self._conn()
            first = db.execute("SELECT shape, dtype FROM samples LIMIT 1").fetchone()
            data_bytes = db.execute("SELECT coalesce(sum(nbytes), 0) FROM samples").fetchone()[0]
            last = db.execute("SELECT step, time, loss, accuracy, val_loss, val_accuracy, lr "
                              "FROM metrics ORDER BY rowid DESC LIMIT 1").fetchone()
        file_bytes = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return StoreStats(
            path=str(self.path), file_bytes=file_bytes,
            sample_shape=None if first is None else tuple(json.loads(first[0])),
            sample_dtype=None if first is None else first[1],
            class_names=names,
            per_class={name: (train.get(i, 0), val.get(i, 0)) for i, name in enumerate(names)},
            unlabelled=train.get(None, 0) + val.get(None, 0),
            data_bytes=data_bytes, last_metric=None if last is None else Metric(*last),
            max_per_class=self.max_per_class, max_bytes=self.max_bytes,
            validation_fraction=self.validation_fraction)

    def export_npz(self, path: Path | str, *, split: str = "all", unlabelled: bool = False) -> int:
        """Write samples to an ``.npz`` (``x`` float32, ``y`` int64 with -1 for unlabelled,
        ``class_names`` str), atomically; returns the number of samples written."""
        x, y = self.load_arrays(split, unlabelled=unlabelled)
        if x.shape[0] == 0:
            raise DataError(f"nothing to export: the {split} split of {self.path} holds no "
                            f"{'' if unlabelled else 'labelled '}samples")
        write_npz(path, x, y, self.class_names)
        return int(x.shape[0])

    def import_npz(self, path: Path | str, *, source: str | None = None) -> int:
        """Add the samples of an ``.npz`` written by ``export_npz`` (or any file with ``x``, ``y``,
        ``class_names``); they must fit the store's sample shape and class names. Returns the
        number added (the bounds may drop some again)."""
        x, y, names = read_npz(path)
        return self.import_arrays(x, y, names, path=path, source=source)

    def import_arrays(self, x: np.ndarray, y: "ArrayLike", names: Iterable[str], *, path: Path | str,
                      source: str | None = None) -> int:
        """Add samples that ``read_npz`` read from ``path`` (x, y with -1 for unlabelled, class
        names); ``source`` defaults to "import:<file name>"."""
        stored_shape = self.sample_shape
        if stored_shape is not None and tuple(x.shape[1:]) != stored_shape:
            raise ShapeError(f"{path}: samples have shape {tuple(x.shape[1:])} but the store holds "
                             f"shape {stored_shape}")
        with self._lock:
            self.set_class_names(names)
            self.add_samples(x, y, source or f"import:{Path(path).name}")
        return int(x.shape[0])


class _Transaction:
    """``with``: BEGIN IMMEDIATE on the connection ``db``, COMMIT or ROLLBACK on the way out.

    An ``sqlite3.Error`` (a full disk, a lock held too long, a damaged page) goes on as it is,
    for ``_guarded`` to name; a failing ROLLBACK never hides the error that caused it."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error:
                _roll_back(self.db)
                raise
        _roll_back(self.db)
        return False


def _roll_back(db: sqlite3.Connection) -> None:
    """ROLLBACK if a transaction is still open (SQLite ends one itself on a full disk)."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _end_read(db: sqlite3.Connection) -> None:
    """End a read transaction; its failure (nothing was written) must not hide a first error."""
    if db.in_transaction:
        try:
            db.execute("COMMIT")
        except sqlite3.Error:
            _roll_back(db)


def _read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _oldest_ids(db: sqlite3.Connection, label: int | None) -> Iterator[tuple[int, int]]:
    """(id, nbytes) of a label's samples, oldest first, fetched lazily in chunks."""
    last = -1
    while True:
        rows = db.execute("SELECT id, nbytes FROM samples WHERE label IS ? AND id > ? ORDER BY id LIMIT 256",
                          (label, last)).fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def _as_sample(x: "ArrayLike") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiub" or x.ndim == 0:
        raise ShapeError(f"a sample must be a numeric array with at least one axis, got dtype "
                         f"{x.dtype} shape {x.shape}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DataError("a sample contains NaN or inf values; not stored")
    return np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))


def _decode(shape: str, dtype: str, data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(json.loads(shape)).astype(np.float32)


def _fill_arrays(rows: Iterable[tuple], count: int, shape: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((count, *(shape or ())), dtype=np.float32)
    y = np.empty(count, dtype=np.int64)
    filled = 0
    for label, row_shape, dtype, data in rows:
        if filled == count:
            break
        x[filled] = _decode(row_shape, dtype, data)
        y[filled] = -1 if label is None else label
        filled += 1
    return x[:filled], y[:filled]


def write_npz(path: Path | str, x: "ArrayLike", y: "ArrayLike", class_names: Iterable[str]) -> None:
    """Write ``x`` (float32 (N, ...)), ``y`` (int64 (N,)) and ``class_names`` to ``path``
    atomically: a temporary file in the same directory, fsync, rename, fsync the directory."""
    with atomic_write(path, mode=0o600) as file:  # exports may hold camera frames
        np.savez_compressed(file, x=np.asarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64),
                            class_names=np.array([str(n) for n in class_names], dtype=str))


def read_npz(path: Path | str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read and check an ``.npz`` data set: returns x float32 (N, ...), y int64 (N,) with -1 for
    unlabelled samples, and class_names (tuple of str). Never unpickles."""
    data = load_numpy(path, "npz")
    missing = [key for key in ("x", "y", "class_names") if key not in data]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}; a data file holds "
                        "x (samples), y (class indices) and class_names")
    x, y, names = data["x"], data["y"], data["class_names"]
    if x.dtype.kind not in "fiub" or x.ndim < 2:
        raise DataError(f"{path}: x must be a numeric array (N, ...), got dtype {x.dtype} shape {x.shape}")
    if y.dtype.kind not in "iu" or y.shape != (x.shape[0],):
        raise DataError(f"{path}: y must be integers of shape ({x.shape[0]},), got dtype {y.dtype} shape {y.shape}")
    if names.dtype.kind != "U" or names.ndim != 1 or names.size == 0:
        raise DataError(f"{path}: class_names must be a 1-D array of strings")
    names = tuple(str(n) for n in names)
    y = y.astype(np.int64)
    bad = (y < -1) | (y >= len(names))
    if bad.any():
        raise DataError(f"{path}: label {int(y[bad][0])} is outside -1..{len(names) - 1} "
                        f"({len(names)} classes)")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: x contains NaN or inf values")
    return x, y, names


def read_dataset(path: Path | str, class_names: Sequence[str],
                 input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled samples of a store file with the store's own split, for
    ``pi-backprop train --data samples.db`` (``datasets.open_dataset`` calls this).

    Opens the store read-only (safe while the service runs). Returns x : float32
    (N, *input_shape), y : int64 (N,), eval_mask : bool (N,), True for the validation split.
    ``DataError`` if the store was collected for other classes or another input shape.
    """
    with SampleStore(path, readonly=True) as store:
        if store.class_names != tuple(class_names):
            raise DataError(f"{path} holds samples of the classes {', '.join(store.class_names)}; "
                            f"the model has {', '.join(class_names)}")
        if store.sample_shape not in (None, tuple(input_shape)):
            raise DataError(f"{path} holds samples of shape {store.sample_shape}; "
                            f"the model takes {tuple(input_shape)}")
        return store.load_split()
