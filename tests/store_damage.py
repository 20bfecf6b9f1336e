"""A sample store damaged as a failing SD card damages one: pages overwritten with garbage.
Shared by the store, salvage, command-line and service tests."""

import contextlib
import sqlite3

import numpy as np

from pi_backprop.storage.store import SampleStore

PAGE = 4096


def damage(path, pages, page_size=PAGE, seed=7):
    """Overwrite the given pages (0 = the header page) with garbage."""
    rng = np.random.default_rng(seed)
    with open(path, "r+b") as file:
        for page in pages:
            file.seek(page * page_size)
            file.write(rng.integers(0, 256, page_size, dtype=np.uint8).tobytes())


def settle(path):
    """Move the WAL's pages into the file, so that damage to the file is damage to the store."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def root_page(path, name):
    """The page (0-based, as ``damage`` counts) where table or index ``name`` starts."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0] - 1


def spread_pages(path, count=12, spare=()):
    """``count`` pages spread over the file, never the header page, nor where the tables
    named in ``spare`` start."""
    pages = path.stat().st_size // PAGE
    kept = {root_page(path, name) for name in spare}
    return [page for page in range(2, pages, max(1, pages // count)) if page not in kept]


def filled_store(path, names, samples=200, size=1000, metrics=True):
    """A store of ``samples`` samples (sample n: ``size`` float32 values equal to n, label
    n % len(names)) and a metrics row per sample; returns {id: n}."""
    ids = {}
    with SampleStore(path) as store:
        store.set_class_names(names)
        for number in range(samples):
            ids[store.add_sample(np.full(size, number, dtype=np.float32), number % len(names))] = number
            if metrics:
                store.record_metrics(number, 1.0 / (number + 1))
    settle(path)
    return ids
