"""Salvaging a damaged sample store: real SQLite files with pages overwritten by garbage.
What is saved must be exactly what was stored (same ids, so the same split), what is lost
must be counted, and the damaged file must be kept."""

import contextlib
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from store_damage import PAGE, damage, filled_store, root_page, settle, spread_pages

from pi_backprop.exc import DataError, StoreFullError, StoreLockedError
from pi_backprop.storage import salvage
from pi_backprop.storage.split import LEGACY_OFFSET
from pi_backprop.storage.store import SampleStore

NAMES = ("cup", "pen", "hand")


def stored(path):
    """{id: (label, the value all its elements have, time, source)} of every sample, read with
    sqlite3 itself, and the store's split offset."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = {i: (label, float(np.frombuffer(data, np.float32)[0]), time, source)
                for i, label, data, time, source in db.execute("SELECT id, label, data, time, source FROM samples")}
    with SampleStore(path, readonly=True) as store:
        return rows, store.split_offset


def test_an_intact_store_passes_the_check(tmp_path):
    path = tmp_path / "samples.db"
    filled_store(path, NAMES, samples=30)
    assert salvage.check(path) == [] and salvage.check(path, quick=True) == []


def test_a_missing_or_foreign_file_is_a_data_error_not_damage(tmp_path):
    with pytest.raises(DataError, match="no sample store at"):
        salvage.check(tmp_path / "none.db")
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("PRAGMA application_id = 12345")
        db.execute("CREATE TABLE t (a)")
    with pytest.raises(DataError, match="not a pi-backprop sample store"):
        salvage.check(tmp_path / "other.db")


def test_salvage_saves_every_readable_sample_as_it_was_and_counts_the_lost(tmp_path):
    path = tmp_path / "samples.db"
    numbers = filled_store(path, NAMES, samples=300)
    before, offset = stored(path)
    damage(path, spread_pages(path, spare=("classes", "settings", "sqlite_sequence")))
    assert salvage.check(path), "the damage must show"

    report = salvage.salvage(path)

    assert report.aside.name.startswith("samples.db.corrupt-") and report.aside.exists()
    assert report.lost is not None and report.lost > 0 and report.saved > 0
    assert report.saved + report.lost == 300
    assert report.class_names == NAMES and not report.classes_guessed
    assert salvage.check(path) == []
    after, offset_after = stored(path)
    assert len(after) == report.saved
    for sample_id, row in after.items():         # the same ids, labels, times, sources and values
        assert row == before[sample_id]
        assert row[1] == numbers[sample_id]
    assert offset_after == offset                 # with the same ids: every sample on its side of the split
    assert 0 < report.metrics_saved <= 300
    text = report.text()
    assert f"saved {report.saved} of 300 samples ({report.lost} lost)" in text and str(report.aside) in text
    assert "\n" not in text
    with SampleStore(path) as store:              # new samples never reuse an id
        assert store.add_sample(np.zeros(1000, np.float32), 0) > max(before)


def test_salvage_keeps_a_legacy_split_offset_and_the_bounds(tmp_path):
    path = tmp_path / "samples.db"
    filled_store(path, NAMES, samples=100)
    with sqlite3.connect(path) as db:           # as 0.1 made it: no split offset recorded
        db.execute("DELETE FROM settings WHERE key = 'split_offset'")
    with SampleStore(path, max_per_class=77, max_bytes=5_000_000):
        pass
    settle(path)
    damage(path, spread_pages(path, 4, spare=("settings",)))
    salvage.salvage(path)
    with SampleStore(path, readonly=True) as store:
        assert store.split_offset == LEGACY_OFFSET
        assert (store.max_per_class, store.max_bytes) == (77, 5_000_000)


def test_unreadable_class_names_come_from_the_caller_or_stand_in(tmp_path):
    path = tmp_path / "samples.db"
    filled_store(path, NAMES, samples=40)
    damage(path, [root_page(path, "classes")])
    (tmp_path / "copy.db").write_bytes(path.read_bytes())
    report = salvage.salvage(path)
    assert report.class_names == ("class 0", "class 1", "class 2") and report.classes_guessed
    assert report.saved == 40 and report.lost == 0
    assert "the class names were unreadable" in report.text()
    report = salvage.salvage(tmp_path / "copy.db", class_names=NAMES)
    assert report.class_names == NAMES and not report.classes_guessed and report.saved == 40


def test_a_store_whose_first_page_is_garbage_is_moved_aside_and_replaced(tmp_path):
    path = tmp_path / "samples.db"
    filled_store(path, NAMES, samples=50)
    damage(path, [0])
    assert "not a database" in salvage.check(path)[0]
    report = salvage.salvage(path, class_names=NAMES, force=True)   # no SQLite magic left: forced
    assert report.saved == 0 and report.lost is None and report.aside.stat().st_size > 0
    assert "the damage hides whether any were lost" in report.text()
    with SampleStore(path, readonly=True) as store:
        assert len(store) == 0 and store.class_names == NAMES


def test_salvage_refuses_while_another_process_has_the_store_open(tmp_path):
    path = tmp_path / "samples.db"
    filled_store(path, NAMES, samples=20)
    damage(path, spread_pages(path, 2))
    code = (f"import sqlite3, sys\ndb = sqlite3.connect({str(path)!r})\ndb.execute('SELECT 1')\n"
            "print('open', flush=True)\nsys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreLockedError, match=f"it is open in another process \\(pid {holder.pid} python"):
            salvage.salvage(path)
        assert not list(tmp_path.glob("samples.db.corrupt-*")), "nothing moved while it is in use"
    finally:
        holder.communicate("\n")


def test_a_disk_too_full_for_the_salvage_leaves_the_damaged_file_as_it_was(tmp_path, small_disk):
    disk = small_disk(8)
    path = disk.path / "samples.db"
    filled_store(path, NAMES, samples=200, metrics=False)   # about 0.9 MB of samples
    damage(path, spread_pages(path, 4, spare=("classes", "settings", "sqlite_sequence")))
    before = path.read_bytes()
    disk.fill()
    files = sorted(disk.path.iterdir())
    with pytest.raises(StoreFullError, match="the salvage needs up to .* free, the disk has"):
        salvage.salvage(path)
    assert path.read_bytes() == before
    assert sorted(disk.path.iterdir()) == files
    disk.free_up()
    assert salvage.salvage(path).saved > 0 and salvage.check(path) == []


def test_a_disk_that_fills_during_the_salvage_leaves_the_damaged_file_as_it_was(tmp_path, small_disk, monkeypatch):
    disk = small_disk(8)
    path = disk.path / "samples.db"
    filled_store(path, NAMES, samples=200, metrics=False)
    damage(path, spread_pages(path, 4, spare=("classes", "settings", "sqlite_sequence")))
    before = path.read_bytes()
    with open(disk.path / "filler", "wb") as filler:  # room for part of the fresh store only
        filler.write(b"\0" * (disk_free(disk.path) - 300_000))
    files = sorted(disk.path.iterdir())
    monkeypatch.setattr(salvage, "free_bytes", lambda _: None)   # past the check before it starts
    with pytest.raises(StoreFullError, match="the disk filled up while the salvaged copy was written .* the "
                       "damaged file is where it was: free some space and repair it again"):
        salvage.salvage(path)
    assert path.read_bytes() == before
    assert sorted(disk.path.iterdir()) == files, "the part-written store goes"


def disk_free(folder):
    import os

    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def test_a_huge_gap_in_the_ids_is_stepped_over_by_the_index(tmp_path):
    path = tmp_path / "samples.db"
    filled_store(path, NAMES, samples=60)
    with contextlib.closing(sqlite3.connect(path)) as db, db:   # as bounds and a crafted file leave it
        data = np.full(1000, 999, np.float32).tobytes()
        db.execute("INSERT INTO samples (id, time, source, label, shape, dtype, nbytes, data) "
                   "VALUES (?, 1.0, 'test', 0, '[1000]', '<f4', 4000, ?)", (10**9, data))
    settle(path)
    before, _ = stored(path)
    damage(path, spread_pages(path, 3, spare=("classes", "settings", "sqlite_sequence", "samples_by_label")))
    report = salvage.salvage(path)
    after, _ = stored(path)
    assert 10**9 in after and after[10**9] == before[10**9]
    assert report.saved + report.lost == 61 and report.lost > 0
    with SampleStore(path) as store:
        assert store.add_sample(np.zeros(1000, np.float32), 0) > 10**9


def test_a_file_that_is_no_sqlite_file_is_refused_without_force(tmp_path):
    path = tmp_path / "samples.db"
    path.write_text("these are my notes, not a sample store\n" * 200)
    before = path.read_bytes()
    with pytest.raises(DataError, match="does not begin as an SQLite file does; .* add --force"):
        salvage.salvage(path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_a_truncated_store_keeps_the_samples_before_the_cut(tmp_path):
    path = tmp_path / "samples.db"
    numbers = filled_store(path, NAMES, samples=200, metrics=False)
    size = path.stat().st_size
    with open(path, "r+b") as file:                   # a copy cut short, a card that lost its tail
        file.truncate(size // 2 // PAGE * PAGE)
    assert salvage.check(path), "the cut must show"
    report = salvage.salvage(path)
    after, _ = stored(path)
    assert 0 < report.saved < 200 and len(after) == report.saved
    assert all(row[1] == numbers[sample_id] for sample_id, row in after.items())
    assert report.lost is None or report.saved + report.lost == 200
    assert salvage.check(path) == [] and report.aside.stat().st_size == size // 2 // PAGE * PAGE
