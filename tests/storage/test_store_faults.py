"""The sample store on a failing card: a full disk, a lock another process holds, damaged
pages. Real parts: a tmpfs that fills up, a second process holding SQLite's write lock, bytes
overwritten in the file. Every fault is one ``DataError`` line, never an ``sqlite3`` traceback."""

import logging
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from store_damage import damage, filled_store, spread_pages

from pi_backprop.exc import DataError, StoreCorruptError, StoreFullError, StoreLockedError
from pi_backprop.storage.store import SampleStore

NAMES = ["cup", "pen"]


def sample(number):
    return np.full(1000, number, dtype=np.float32)       # 4 kB a sample


def test_a_full_disk_refuses_the_sample_in_one_line_keeps_the_rest_and_recovers(small_disk):
    disk = small_disk(1)
    store = SampleStore(disk.path / "samples.db")
    store.set_class_names(NAMES)
    for number in range(20):
        store.add_sample(sample(number), number % 2)
    disk.fill()
    with pytest.raises(StoreFullError) as caught:
        for number in range(20, 400):           # the WAL may hold a few more first
            store.add_sample(sample(number), number % 2)
    message = str(caught.value)
    assert message.startswith(f"cannot store a sample: the disk holding {store.path} is full (")
    assert message.endswith(" free)") and "\n" not in message
    kept = len(store)
    assert kept >= 20
    with pytest.raises(StoreFullError):       # the next one too: no "cannot rollback" in between
        store.add_sample(sample(999), 0)
    assert len(store) == kept and store.load_arrays("all")[0].shape == (kept, 1000)
    store.close()

    reopened = SampleStore(disk.path / "samples.db", max_per_class=400, max_bytes=10**8)   # a restart, still full
    assert len(reopened) == kept and reopened.class_names == tuple(NAMES)
    disk.free_up()
    new_id = reopened.add_sample(sample(1000), 1)
    assert len(reopened) == kept + 1
    np.testing.assert_array_equal(reopened.newest(1, 1)[0], sample(1000))
    assert new_id > 0
    reopened.close()


def test_a_full_database_commit_is_one_line_and_the_connection_stays_usable(tmp_path):
    """SQLite's own limit on pages fails the same way as a full disk, on any machine."""
    store = SampleStore(tmp_path / "samples.db")
    store.set_class_names(NAMES)
    store.add_sample(sample(0), 0)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 1}")
    with pytest.raises(StoreFullError, match="is full"):
        store.add_samples(np.stack([sample(n) for n in range(10)]), [0] * 10)
    assert not store._db.in_transaction
    assert len(store) == 1
    store._db.execute("PRAGMA max_page_count = 1000000")
    store.add_sample(sample(1), 1)
    assert len(store) == 2


@pytest.fixture
def lock_holder(tmp_path):
    """``lock_holder(path)``: another process that holds the store's write lock (BEGIN
    IMMEDIATE) until ``release()``."""
    processes = []

    class Holder:
        def __init__(self, path):
            code = ("import sqlite3, sys\n"
                    f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
                    "db.execute('BEGIN IMMEDIATE')\n"
                    "print('locked', flush=True)\n"
                    "sys.stdin.readline()\n"
                    "db.execute('ROLLBACK')\n")
            self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True)
            processes.append(self.process)
            assert self.process.stdout.readline().strip() == "locked"
            self.pid = self.process.pid

        def release(self):
            self.process.stdin.write("\n")
            self.process.stdin.flush()
            self.process.wait(10)

    yield Holder
    for process in processes:
        process.kill()
        process.wait()


def test_a_lock_held_by_another_process_is_one_line_naming_it(tmp_path, lock_holder):
    store = SampleStore(tmp_path / "samples.db")
    store.set_class_names(NAMES)
    store.add_sample(sample(0), 0)
    holder = lock_holder(store.path)
    with store.busy_timeout(0.2):
        with pytest.raises(StoreLockedError) as caught:
            store.add_sample(sample(1), 1)
    message = str(caught.value)
    assert f"{store.path} is locked by another process (pid {holder.pid} python" in message
    assert "\n" not in message
    assert len(store) == 1                              # reading goes on beside the lock (WAL)
    holder.release()
    store.add_sample(sample(1), 1)
    assert len(store) == 2
    store.close()


@pytest.fixture
def damaged_store(tmp_path):
    path = tmp_path / "samples.db"
    filled_store(path, NAMES)
    damage(path, spread_pages(path))
    return path


CALLS = {
    "class_names": lambda s: s.class_names,
    "sample_shape": lambda s: s.sample_shape,
    "len": len,
    "counts": lambda s: s.counts("all"),
    "class_counts": lambda s: s.class_counts("train"),
    "labelled_version": lambda s: s.labelled_version(),
    "load_arrays": lambda s: s.load_arrays("all"),
    "load_split": lambda s: s.load_split(),
    "newest": lambda s: s.newest(0, 500),
    "metrics": lambda s: s.metrics(),
    "stats": lambda s: s.stats(),
    "add_sample": lambda s: [s.add_sample(sample(n), 0) for n in range(300)],
    "delete_sample": lambda s: [s.delete_sample(n) for n in range(1, 200)],
    "record_metrics": lambda s: [s.record_metrics(n, 0.5) for n in range(300)],
    "drop_metrics_after": lambda s: s.drop_metrics_after(0),
    "clear": lambda s: s.clear(),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_every_call_on_a_damaged_store_is_a_data_error_never_an_sqlite_traceback(damaged_store, call):
    try:
        store = SampleStore(damaged_store)
    except StoreCorruptError as error:
        assert "data check --repair" in str(error)
        return
    with store:
        try:
            call(store)
        except DataError as error:
            assert "\n" not in str(error)
            if isinstance(error, StoreCorruptError):
                assert "is damaged" in str(error) and "pi-backprop data check --repair" in str(error)
        # A call may also succeed: it touched no damaged page.


def test_some_reads_of_the_damaged_store_do_fail_as_damage(damaged_store):
    """The fixture really damages what the calls above read (else they prove nothing)."""
    with SampleStore(damaged_store, readonly=True) as store:
        with pytest.raises(StoreCorruptError, match="is damaged"):
            store.load_arrays("all")


def test_lowered_bounds_say_how_many_samples_they_drop(tmp_path, caplog):
    path = tmp_path / "samples.db"
    with SampleStore(path, max_per_class=100) as store:
        store.set_class_names(NAMES)
        store.add_samples(np.stack([sample(n) for n in range(60)]), [n % 2 for n in range(60)])
    with caplog.at_level(logging.WARNING, logger="pi_backprop"):
        with SampleStore(path, max_per_class=100) as store:      # the same bounds: nothing said
            assert len(store) == 60
        assert caplog.text == ""
        with SampleStore(path, max_per_class=20) as store:
            assert len(store) == 40
    assert "bounds lowered (max_per_class 100 -> 20): 20 oldest samples dropped" in caplog.text


def test_opening_with_the_saved_bounds_writes_nothing(tmp_path):
    path = tmp_path / "samples.db"
    with SampleStore(path, max_per_class=100, max_bytes=10**7) as store:
        store.set_class_names(NAMES)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.read_bytes()
    with SampleStore(path, max_per_class=100, max_bytes=10**7) as store:
        assert store.class_names == tuple(NAMES)
    assert path.read_bytes() == before
    wal = path.with_name("samples.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_store_reopened_on_a_full_disk_is_full_and_reads_read_only(small_disk):
    """SQLite reports no room for the -shm file as an I/O error: on a full disk that is a full disk."""
    disk = small_disk(1)
    with SampleStore(disk.path / "samples.db") as store:
        store.set_class_names(NAMES)
        store.add_sample(sample(1), 1)
    disk.fill()
    with pytest.raises(StoreFullError, match="is full"):
        SampleStore(disk.path / "samples.db")
    with SampleStore(disk.path / "samples.db", readonly=True) as store:
        assert len(store) == 1 and store.immutable


def test_a_store_on_a_read_only_file_system_reads_and_checks(small_disk):
    """No -shm file can be made there and no one can write: the file is read as it is."""
    from pi_backprop.storage import salvage
    disk = small_disk(1)
    path = disk.path / "samples.db"
    filled_store(path, NAMES, samples=30, metrics=False)
    disk.read_only()
    with SampleStore(path, readonly=True) as store:
        assert len(store) == 30 and store.immutable
        assert store.load_arrays("all")[0].shape == (30, 1000)
    assert salvage.check(path) == []
