"""A damaged sample store: find the damage, and save every sample that can still be read.

    problems = check(path)                 # [] if the file is intact
    report = salvage(path)                 # the readable samples in a fresh store at ``path``
    print(report.text())                   # "saved 412 of 449 samples ...; the damaged file is ..."

An SD card that wears out or loses power mid-write can leave pages of ``samples.db`` holding
garbage. SQLite then answers queries that touch those pages with "database disk image is
malformed", and every other page still reads. ``salvage`` reads the file row by row, stepping
over what fails, writes what it read into a new file (each sample keeping its id, so the
train/validation split stays put, its time and its source), moves the damaged file (with its
-wal and -shm) aside as ``samples.db.corrupt-<UTC time>``, where it stays for whoever wants to
try harder, and puts the new file in its place.

SQLite's own ``.recover`` is not used: it lives only in the ``sqlite3`` shell, which a Pi may
not have, and the one in Debian bookworm (3.40) fails on every file.
"""

import bisect
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..budget import size_text
from ..exc import DataError, StoreFullError, StoreLockedError
from .faults import (
    NEARLY_FULL,
    SQLITE_CANTOPEN,
    SQLITE_CORRUPT,
    SQLITE_IOERR,
    SQLITE_NOTADB,
    free_bytes,
    free_text,
    lock_holders,
    lock_holders_text,
    primary_code,
    store_error,
)
from .split import LEGACY_OFFSET, SPLIT_OFFSET
from .store import APPLICATION_ID, SalvagedSample, SampleStore

_log = logging.getLogger(__name__)

CHUNK = 64              # rows read per query while the file reads cleanly
STEP_SECONDS = 30.0     # at most this long spent trying ids one by one across damaged stretches
BUSY_HINT = "stop that first (sudo systemctl stop pi-backprop: the service repairs the store itself when it starts)"
SEARCH_AHEAD = 100_000  # ids tried one by one past the last readable one when the highest id is unknown
MAX_PROBLEMS = 20       # lines of the integrity check kept
SQLITE_MAGIC = b"SQLite format 3\0"


def check(path: Path | str, *, quick: bool = False) -> list[str]:
    """What SQLite's integrity check finds wrong with the store at ``path``: [] if intact.

    quick : ``PRAGMA quick_check`` (every page read, indexes not compared with their tables;
        a few seconds for a full 100 MB store on an SD card) instead of ``integrity_check``.
    Raises ``DataError`` if there is no file, or it is an SQLite file that is not a store.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no sample store at {path}")
    try:
        with contextlib.closing(_open_read_only(path)) as db:
            app = db.execute("PRAGMA application_id").fetchone()[0]
            if app not in (0, APPLICATION_ID):
                raise DataError(f"{path} is an SQLite file but not a pi-backprop sample store")
            pragma = "quick_check" if quick else "integrity_check"
            rows = [line for row in db.execute(f"PRAGMA {pragma}({MAX_PROBLEMS})")
                    for line in str(row[0]).splitlines() if line and not line.startswith("*** in database")]
    except sqlite3.DatabaseError as error:
        if primary_code(error) in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return [str(error)]
        raise store_error(error, path, "check the sample store") from error
    return [] if rows == ["ok"] else rows


@dataclasses.dataclass(frozen=True)
class SalvageReport:
    """What ``salvage`` did. ``lost`` is None where the damage hides how many samples there were
    (``lost_at_least`` then counts those known to be lost)."""

    path: Path              # the new store
    aside: Path             # the damaged file, moved aside
    saved: int              # samples in the new store
    lost: int | None
    lost_at_least: int
    metrics_saved: int
    class_names: tuple
    classes_guessed: bool   # the class names were unreadable: "class 0", ... stand in for them

    def text(self) -> str:
        if self.lost is not None:
            counted = f"saved {self.saved} of {self.saved + self.lost} samples ({self.lost} lost)"
        elif self.lost_at_least:
            counted = (f"saved {self.saved} samples, at least {self.lost_at_least} lost "
                       "(the damage hides how many there were)")
        else:
            counted = f"saved {self.saved} samples (the damage hides whether any were lost)"
        guessed = ("; the class names were unreadable and stand as 'class 0', ...: repair it again from the "
                   "damaged file with the model's names (data check --repair --model NAME --db FILE)"
                   if self.classes_guessed else "")
        return (f"sample store {self.path} was damaged: {counted} and {self.metrics_saved} rows of training "
                f"history into a fresh store; the damaged file is kept as {self.aside}{guessed}")


def salvage(path: Path | str, *, class_names: tuple | None = None, bounds: dict | None = None,
            busy_hint: str = BUSY_HINT, force: bool = False) -> SalvageReport:
    """Save what can be read of the damaged store at ``path`` into a fresh store at ``path``;
    the damaged file (and its -wal, -shm) moves aside as ``<name>.corrupt-<UTC time>``.

    class_names : the names to use if the file's own are unreadable (the service knows its
        model's); else "class 0", "class 1", ... stand in for them.
    bounds : ``max_per_class``, ``max_bytes``, ``validation_fraction`` for the fresh store if
        the file's own are unreadable (else the defaults). Every readable sample is kept, even
        beyond them: the service's bounds apply when it next stores one.
    busy_hint : what to do while another process has the file open (``StoreLockedError``).
    force : salvage also a file that does not begin as an SQLite file does (its first page
        is garbage); else that is refused, as it may be no store at all.
    Any other ``DataError`` (a full disk) leaves the damaged file where it was and nothing else.
    """
    path = Path(path)
    if not force and not _begins_as_sqlite(path):
        raise DataError(f"cannot repair {path}: it does not begin as an SQLite file does; if it is a sample "
                        "store whose first page is damaged, add --force")
    if lock_holders(path):
        raise StoreLockedError(f"cannot repair {path}: it is open in {lock_holders_text(path)}; {busy_hint}")
    needed = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    free = free_bytes(path)
    if free is not None and free < 2 * needed + NEARLY_FULL:   # the fresh store, and its WAL meanwhile
        raise StoreFullError(f"cannot repair {path}: the salvage needs up to {size_text(2 * needed)} free, "
                             f"the disk has {size_text(free)}")
    fresh = path.with_name(path.name + ".salvage")
    _remove_with_journal(fresh)
    try:
        source = _open_read_only(path)
    except sqlite3.DatabaseError:
        source = None
    try:
        reader = _Reader(source)
        names, guessed = reader.class_names(class_names)
        with SampleStore(fresh, **{**(bounds or {}), **reader.settings()}) as store:
            if names:
                store.set_class_names(names)
            store.restore_samples(reader.samples(len(names)), next_id=reader.highest_id,
                                  split_offset=reader.split_offset)
            metrics_saved = store.record_metric_rows(reader.metrics())
            saved_ids = store.sample_ids()
        _checkpoint_fully(fresh)
    except StoreFullError:
        _remove_with_journal(fresh)
        raise StoreFullError(f"cannot repair {path}: the disk filled up while the salvaged copy was written "
                             f"(the copy is removed, {free_text(path)} now); the damaged file is where it was: "
                             "free some space and repair it again") from None
    except BaseException:
        _remove_with_journal(fresh)
        raise
    finally:
        if source is not None:
            source.close()
    try:
        aside = _swap(path, fresh)
    except OSError as error:
        raise DataError(f"cannot repair {path}: {error.strerror or error} while moving the files; the damaged "
                        f"file is where it was, the salvaged one is {fresh}") from None
    listed = reader.listed_ids
    lost_ids = (listed or set()) - set(saved_ids)
    report = SalvageReport(path=path, aside=aside, saved=len(saved_ids),
                           lost=len(lost_ids | reader.rejected) if listed is not None else None,
                           lost_at_least=len(lost_ids | reader.rejected), metrics_saved=metrics_saved,
                           class_names=tuple(names), classes_guessed=guessed)
    _log.debug("salvage of %s: %d ids listed by the index, %d rows rejected", path,
               -1 if listed is None else len(listed), len(reader.rejected))
    return report


def _begins_as_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _checkpoint_fully(path: Path) -> None:
    """Move the fresh store's WAL into its file (``StoreFullError`` if it cannot: a store
    renamed without its WAL would be missing what the WAL holds)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        try:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            db.execute("PRAGMA journal_mode = DELETE")   # no WAL beside it until the service opens it
        except sqlite3.Error as error:
            raise store_error(error, path, "finish the salvaged store") from error
    wal = Path(f"{path}-wal")
    if busy or (wal.exists() and wal.stat().st_size):
        raise StoreFullError(f"cannot finish the salvaged store {path}: its journal could not be written back "
                             f"({free_text(path)})")


def _swap(path: Path, fresh: Path) -> Path:
    """Put ``fresh`` in place of the damaged store at ``path``, which is kept aside; at every
    moment a file is at ``path`` (the damaged one, then the fresh one), and no WAL is ever
    beside a file it does not belong to."""
    aside = _aside_name(path)
    for suffix in ("-wal", "-shm"):        # the journal first, with the file it belongs to
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    os.link(path, aside)
    os.replace(fresh, path)
    _sync_folder(path.parent)
    return aside


def _open_read_only(path: Path) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + "?mode=ro"
    db = _reading_past_the_size(sqlite3.connect(uri, uri=True, isolation_level=None))
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()   # NOTADB shows here
    except sqlite3.OperationalError as error:
        db.close()
        if primary_code(error) not in (SQLITE_IOERR, SQLITE_CANTOPEN):
            raise
        # No room or no right for the -shm file (a full disk, a read-only file system): the
        # file as it is, without the WAL's newest pages.
        db = _reading_past_the_size(sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None))
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return db


def _reading_past_the_size(db: sqlite3.Connection) -> sqlite3.Connection:
    """A file shorter than its header says (a truncated copy, a card that lost its tail) is
    refused as a whole unless the schema is writable; on this read-only connection that lets
    SQLite read the pages that are there."""
    db.execute("PRAGMA writable_schema = ON")
    return db


class _Reader:
    """Reads a damaged store (``db``; None if nothing of it opens) a row at a time, stepping
    over the pages that fail."""

    def __init__(self, db: sqlite3.Connection | None):
        self.db = db
        self.rejected: set[int] = set()     # ids of rows read but unusable (a torn blob, a wrong shape)
        self.listed_ids = self._listed_ids()
        self.highest_id = max([self._sequence(), *(self.listed_ids or ())], default=0)
        rows = self._try("SELECT key, value FROM settings")
        self._saved_settings = None if rows is None else {
            key: value for key, value in rows if isinstance(value, (int, float))}

    @property
    def split_offset(self) -> int:
        """The split rule's offset the store recorded (a store without one predates 0.2); a
        store whose settings are unreadable is taken for a new one."""
        if self._saved_settings is None:
            return SPLIT_OFFSET
        offset = self._saved_settings.get("split_offset", LEGACY_OFFSET)
        return int(offset) if offset in (LEGACY_OFFSET, SPLIT_OFFSET) else SPLIT_OFFSET

    def _try(self, query: str, params: tuple = ()) -> list | None:
        if self.db is None:
            return None
        try:
            return self.db.execute(query, params).fetchall()
        except sqlite3.DatabaseError:
            return None

    def _listed_ids(self) -> set[int] | None:
        """Every id the label index lists (it also survives when table pages do not), or None
        if the index is damaged too."""
        rows = self._try("SELECT id FROM samples INDEXED BY samples_by_label")
        return None if rows is None else {row[0] for row in rows}

    def _sequence(self) -> int:
        rows = self._try("SELECT seq FROM sqlite_sequence WHERE name = 'samples'")
        return int(rows[0][0]) if rows and isinstance(rows[0][0], int) else 0

    def settings(self) -> dict:
        """The bounds the store was given (those that read and make sense)."""
        saved = self._saved_settings or {}
        settings = {}
        for key, kind in (("max_per_class", int), ("max_bytes", int), ("validation_fraction", float)):
            if key in saved:
                settings[key] = kind(saved[key])
        with contextlib.suppress(DataError):
            SampleStore.check_settings(**{**SampleStore.DEFAULTS, **settings})
            return settings
        return {}

    def class_names(self, fallback: tuple | None) -> tuple[tuple, bool]:
        """(names, guessed): the store's class names, else ``fallback``, else placeholders for
        every label the samples use."""
        rows = self._try("SELECT label, name FROM classes ORDER BY label")
        if rows and [label for label, _ in rows] == list(range(len(rows))):
            return tuple(str(name) for _, name in rows), False
        if fallback:
            return tuple(fallback), False
        labels = (self._try("SELECT max(label) FROM samples INDEXED BY samples_by_label")
                  or self._try("SELECT max(label) FROM samples NOT INDEXED"))
        highest = labels[0][0] if labels and isinstance(labels[0][0], int) else -1
        return tuple(f"class {label}" for label in range(highest + 1)), highest >= 0

    def samples(self, classes: int) -> Iterator[SalvagedSample]:
        """Every readable, well-formed sample, in id order."""
        shape = None
        columns = "id, time, source, label, shape, dtype, nbytes, data"
        listed = sorted(self.listed_ids) if self.listed_ids is not None else None
        for row in self._rows("samples", "id", columns, self.highest_id, listed):
            sample = _sample_from_row(row, classes)
            if sample is None or (shape is not None and sample.x.shape != shape):
                self.rejected.add(row[0])
                continue
            shape = sample.x.shape
            yield sample

    def metrics(self) -> Iterator[tuple]:
        """Readable rows of training history: (step, time, loss, accuracy, val_loss, val_accuracy, lr)."""
        highest = self._try("SELECT max(rowid) FROM metrics")
        top = highest[0][0] if highest and isinstance(highest[0][0], int) else 0
        for row in self._rows("metrics", "rowid", "rowid, step, time, loss, accuracy, val_loss, val_accuracy, lr",
                              top):
            values = row[1:]
            if isinstance(values[0], int) and all(v is None or isinstance(v, (int, float)) for v in values[1:]) \
                    and values[1] is not None:
                yield values

    def _rows(self, table: str, key: str, columns: str, highest: int, listed: list | None = None) -> Iterator[tuple]:
        """Rows of ``table`` in ``key`` order: whole chunks while they read, one key at a
        time across a damaged stretch (a query that touches a bad page fails as a whole).

        Across a stretch, only the keys in ``listed`` (sorted; the label index's) are tried
        where there is such a list, else every key up to ``highest`` (or SEARCH_AHEAD past
        the last readable one where the highest is unknown), for at most STEP_SECONDS."""
        if self.db is None:
            return
        chunk = f"SELECT {columns} FROM {table} NOT INDEXED WHERE {key} > ? ORDER BY {key} LIMIT {CHUNK}"
        single = f"SELECT {columns} FROM {table} NOT INDEXED WHERE {key} = ?"
        position, last_good, stepping_since = 0, 0, None
        while True:
            try:
                rows = self.db.execute(chunk, (position,)).fetchall()
            except sqlite3.DatabaseError:
                stepping_since = stepping_since or time.monotonic()
                if time.monotonic() - stepping_since > STEP_SECONDS:
                    _log.warning("salvage of %s: gave up stepping over damaged pages of %s after %.0f s",
                                 table, table, STEP_SECONDS)
                    return
                if listed is not None:
                    after = bisect.bisect_right(listed, position)
                    if after == len(listed):
                        return
                    position = listed[after]
                else:
                    if position >= (highest or last_good + SEARCH_AHEAD):
                        return
                    position += 1
                try:
                    rows = self.db.execute(single, (position,)).fetchall()
                except sqlite3.DatabaseError:
                    continue
                if rows:
                    last_good = position
                    yield rows[0]
                continue
            stepping_since = None
            if not rows:
                return
            yield from rows
            position = last_good = rows[-1][0]


def _sample_from_row(row: tuple, classes: int) -> SalvagedSample | None:
    """The sample in a row read from a damaged file, or None if any field is unusable."""
    sample_id, time, source, label, shape, dtype, nbytes, data = row
    try:
        shape = tuple(json.loads(shape))
        dtype = np.dtype(dtype)
    except (TypeError, ValueError):
        return None
    well_formed = (
        isinstance(sample_id, int) and isinstance(time, (int, float)) and math.isfinite(time)
        and isinstance(source, str) and (label is None or (isinstance(label, int) and 0 <= label < classes))
        and shape and all(isinstance(n, int) and n > 0 for n in shape) and dtype.kind in "fiub"
        and isinstance(data, bytes) and nbytes == len(data) == math.prod(shape) * dtype.itemsize)
    if not well_formed:
        return None
    x = np.frombuffer(data, dtype=dtype).reshape(shape)
    if dtype.kind == "f" and not np.all(np.isfinite(x)):
        return None
    return SalvagedSample(id=sample_id, time=float(time), source=source, label=label, x=x)


def _aside_name(path: Path) -> Path:
    """``<name>.corrupt-<UTC time>``, not taken yet."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while aside.exists():
        counter += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}.{counter}")
    return aside


def _remove_with_journal(path: Path) -> None:
    for suffix in ("-wal", "-shm", ""):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

