"""Sample store: round trips, bounds, the stable split, balanced batches, readers beside a writer."""

import sqlite3

import numpy as np
import pytest

from pi_backprop.exc import DataError, ShapeError
from pi_backprop.storage.split import is_validation
from pi_backprop.storage.store import (
    SampleStore,
    default_store_path,
    read_dataset,
    read_npz,
    write_npz,
)

NAMES = ["still", "walking", "tapping"]


@pytest.fixture
def store(tmp_path):
    with SampleStore(tmp_path / "samples.db", max_per_class=1000, max_bytes=10**8) as store:
        store.set_class_names(NAMES)
        yield store


def tagged(label, number, shape=(4,)):
    """A sample whose values say which label and insertion number it has."""
    return np.full(shape, label * 1000 + number, dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16, ">f4"])
def test_samples_round_trip_as_float32(store, rng, dtype):
    x = (rng.random((5, 2, 3)) * 100).astype(dtype)
    store.add_samples(x, [0, 1, 2, 0, 1], "test")
    loaded, labels = store.load_arrays("all")
    assert loaded.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(loaded, x.astype(np.float32))
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1])


def test_raw_bytes_not_pickle(store):
    store.add_sample(np.arange(3, dtype=np.float32), 1, "cam")
    row = store._db.execute("SELECT shape, dtype, nbytes, data, source, label FROM samples").fetchone()
    assert row == ("[3]", "<f4", 12, np.arange(3, dtype="<f4").tobytes(), "cam", 1)


@pytest.mark.parametrize("x, label, error, message", [
    (np.zeros(5, np.float32), 0, ShapeError, r"shape \(5,\) but the store .* holds shape \(4,\)"),
    (np.zeros(4, np.float32), 3, DataError, "label 3 is not a class index"),
    (np.zeros(4, np.float32), -1, DataError, "label -1 is not a class index"),
    (np.array([0, np.nan, 0, 0], np.float32), 0, DataError, "NaN or inf"),
    (np.array(["a", "b", "c", "d"]), 0, ShapeError, "numeric array"),
    (np.float32(1), 0, ShapeError, "at least one axis"),
])
def test_bad_samples_are_refused(store, x, label, error, message):
    store.add_sample(np.zeros(4, np.float32), 0)
    with pytest.raises(error, match=message):
        store.add_sample(x, label)
    assert len(store) == 1


def test_labels_need_class_names(tmp_path):
    with SampleStore(tmp_path / "s.db") as store:
        store.add_sample(np.zeros(2), None)  # unlabelled is fine
        with pytest.raises(DataError, match="no class names"):
            store.add_sample(np.zeros(2), 0)


def test_class_names_are_checked(store):
    store.set_class_names(NAMES)  # the same: fine
    assert store.class_names == tuple(NAMES)
    with pytest.raises(DataError, match=r"holds classes \['still', 'walking', 'tapping'\], not \['a', 'b'\]"):
        store.set_class_names(["a", "b"])
    with pytest.raises(DataError, match="distinct"):
        store.set_class_names(["a", "a"])


def test_per_class_bound_drops_oldest_of_that_class(tmp_path):
    with SampleStore(tmp_path / "s.db", max_per_class=5) as store:
        store.set_class_names(NAMES)
        for number in range(12):
            store.add_sample(tagged(0, number), 0)
        store.add_sample(tagged(1, 0), 1)
        for number in range(7):
            store.add_sample(tagged(2, number), None)
        x, y = store.load_arrays("all", unlabelled=True)
    kept = {(int(label), int(row[0]) % 1000) for row, label in zip(x, y)}
    assert kept == ({(0, n) for n in range(7, 12)} | {(1, 0)} | {(-1, n) for n in range(2, 7)})


def test_byte_bound_drops_unlabelled_first_then_the_largest_class(tmp_path):
    sample_bytes = 4 * 4
    with SampleStore(tmp_path / "s.db", max_per_class=1000, max_bytes=10 * sample_bytes) as store:
        store.set_class_names(NAMES)
        for number in range(3):
            store.add_sample(tagged(2, number), None)   # unlabelled, oldest
        for number in range(5):
            store.add_sample(tagged(0, number), 0)
        for number in range(2):
            store.add_sample(tagged(1, number), 1)
        assert store.counts() == {None: 3, 0: 5, 1: 2}
        store.add_sample(tagged(1, 2), 1)            # 11 samples: one unlabelled goes
        assert store.counts() == {None: 2, 0: 5, 1: 3}
        store.add_samples(np.stack([tagged(1, 3), tagged(1, 4), tagged(1, 5)]), [1, 1, 1])
        # 13 samples: both unlabelled go, then the oldest of the largest class (0: 5 vs 1: 6 -> 1)
        assert store.counts() == {0: 5, 1: 5}
        x, y = store.load_arrays("all")
        assert sorted(int(v) for v in x[y == 1, 0] % 1000) == [1, 2, 3, 4, 5]
        assert store.stats().data_bytes == 10 * sample_bytes


def test_set_limits_applies_at_once(store):
    store.add_samples(np.stack([tagged(0, n) for n in range(6)]), [0] * 6)
    assert store.set_limits(max_per_class=2) == 4
    x, _ = store.load_arrays("all")
    np.testing.assert_array_equal(x[:, 0] % 1000, [4, 5])
    with pytest.raises(DataError, match="positive"):
        store.set_limits(max_bytes=0)


def test_settings_are_saved_for_the_next_writer_and_readers(tmp_path):
    path = tmp_path / "s.db"
    with SampleStore(path, max_per_class=3, max_bytes=5000, validation_fraction=0.5):
        pass
    with SampleStore(path) as store:                        # e.g. `pi-backprop data import`
        assert (store.max_per_class, store.max_bytes, store.validation_fraction) == (3, 5000, 0.5)
        store.set_class_names(NAMES)
        store.add_samples(np.stack([tagged(0, n) for n in range(5)]), [0] * 5)
        assert store.counts() == {0: 3}
        store.set_limits(max_per_class=2)
    with SampleStore(path, readonly=True) as reader:
        assert reader.stats().max_per_class == 2 and reader.counts() == {0: 2}
    with SampleStore(tmp_path / "new.db") as fresh:
        assert fresh.max_per_class == SampleStore.DEFAULTS["max_per_class"]
    with pytest.raises(DataError, match="validation fraction"):
        SampleStore(path, validation_fraction=0.95)


def test_split_is_stable_as_samples_come_and_go(tmp_path):
    with SampleStore(tmp_path / "s.db", max_per_class=300, validation_fraction=0.25) as store:
        store.set_class_names(NAMES)
        label_of = {store.add_sample(tagged(n % 3, n), n % 3): n % 3 for n in range(600)}
        val_before = set(store.load_arrays("val")[0][:, 0].tolist())
        label_of.update({store.add_sample(tagged(n % 3, n), n % 3): n % 3 for n in range(600, 1200)})
        kept = sorted(label_of)[-900:]                      # 300 per class, oldest dropped
        expected_val = [i for i in kept if is_validation(i, 0.25)]
        assert store.counts("val") == {label: sum(label_of[i] == label for i in expected_val)
                                       for label in range(3)}
        val_after = set(store.load_arrays("val")[0][:, 0].tolist())
        train_after = set(store.load_arrays("train")[0][:, 0].tolist())
        survivors = val_before & (val_after | train_after)
        assert survivors and survivors <= val_after          # no sample changed sides
        assert len(val_after) + len(train_after) == 900
        assert 0.2 < len(val_after) / 900 < 0.3


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5])
def test_split_fraction(fraction):
    share = np.mean([is_validation(i, fraction) for i in range(1, 8001)])
    assert abs(share - fraction) < 0.02
    # consecutive ids share a side in blocks, so near-duplicate captures stay together
    assert is_validation(8, fraction) == is_validation(15, fraction)


def test_reader_beside_a_writer(store, tmp_path):
    store.add_sample(tagged(1, 0), 1)
    with SampleStore(store.path, readonly=True) as reader:
        assert reader.class_names == tuple(NAMES)
        assert reader.counts() == {1: 1}
        store.add_sample(tagged(2, 0), 2)                   # the writer goes on
        assert reader.counts() == {1: 1, 2: 1}
        with pytest.raises(DataError, match="read-only"):
            reader.add_sample(tagged(0, 0), 0)
    x, y, eval_mask = read_dataset(store.path, NAMES, (4,))
    assert sorted(y) == [1, 2] and x.shape == (2, 4) and eval_mask.dtype == bool
    with pytest.raises(DataError, match="classes"):
        read_dataset(store.path, NAMES[::-1], (4,))
    with pytest.raises(DataError, match="shape"):
        read_dataset(store.path, NAMES, (5,))


@pytest.mark.parametrize("prepare, message", [
    (lambda path: None, "no sample store at"),
    (lambda path: path.write_bytes(b"this is not sqlite" * 100), "not an SQLite database"),
    (lambda path: sqlite3.connect(path).execute("CREATE TABLE t (a)"), "not a pi-backprop sample store"),
])
def test_foreign_files(tmp_path, prepare, message):
    path = tmp_path / "x.db"
    prepare(path)
    with pytest.raises(DataError, match=message):
        SampleStore(path, readonly=True)


def test_newer_schema_version_is_refused(store):
    store._db.execute("PRAGMA user_version = 7")
    store.close()
    with pytest.raises(DataError, match="version 7, written by a newer pi-backprop; this one reads version 1"):
        SampleStore(store.path)


def test_a_full_disk_is_a_data_error_and_loses_nothing(store):
    store.add_sample(tagged(0, 0), 0)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DataError, match="full"):
        store.add_samples(np.ones((200, 4), np.float32), [0] * 200)
    assert store.counts() == {0: 1}
    store._db.execute("PRAGMA max_page_count = 1000000")
    store.add_sample(tagged(0, 1), 0)
    assert store.counts() == {0: 2}


def test_metrics_history(store):
    for step in (10, 20, 30):
        store.record_metrics(step, loss=1 / step, accuracy=step / 100, lr=0.01, time=1000 + step)
    store.record_metrics(40, loss=None, val_loss=0.5, val_accuracy=0.75)
    history = store.metrics()
    assert [m.step for m in history] == [10, 20, 30, 40]
    assert history[1].loss == pytest.approx(0.05) and history[1].time == 1020 and history[1].lr == 0.01
    assert history[3].val_accuracy == 0.75 and history[3].accuracy is None
    assert [m.step for m in store.metrics(since_step=25)] == [30, 40]
    assert store.drop_metrics_after(20) == 2
    assert [m.step for m in store.metrics()] == [10, 20]
    assert store.stats().last_metric.step == 20


def test_stats(store):
    store.add_samples(np.stack([tagged(0, n) for n in range(40)]), [0] * 40)
    store.add_sample(tagged(2, 0), None)
    stats = store.stats()
    train, val = stats.per_class["still"]
    assert train + val == 40 and val == store.counts("val")[0]
    assert stats.per_class["walking"] == (0, 0)
    assert stats.unlabelled == 1 and stats.labelled == 40
    assert stats.sample_shape == (4,) and stats.sample_dtype == "<f4"
    assert stats.data_bytes == 41 * 16 and stats.file_bytes > stats.data_bytes


def test_delete_sample_removes_one_sample_from_the_file(store, tmp_path):
    ids = [store.add_sample(tagged(label, n), label, "test") for n, label in enumerate((0, 1, 1))]
    assert store.delete_sample(ids[1]) is True
    assert store.delete_sample(ids[1]) is False
    with SampleStore(tmp_path / "samples.db", readonly=True) as reader:
        x, y = reader.load_arrays("all")
    assert sorted(y.tolist()) == [0, 1] and 1001 not in x[:, 0].tolist()

def test_clear(store):
    store.add_sample(tagged(0, 0), 0)
    store.record_metrics(1, 0.5)
    assert store.clear() == 1
    assert len(store) == 0 and store.metrics() == [] and store.class_names == tuple(NAMES)
    store.clear(classes=True)
    assert store.class_names == ()
    store.add_sample(np.zeros((2, 2)), None)                # any shape again once empty
    assert store.sample_shape == (2, 2)


def test_export_import_round_trip(store, tmp_path, rng):
    x = rng.random((30, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    store.add_samples(x, y)
    store.add_sample(tagged(0, 99), None)
    out = tmp_path / "export.npz"
    assert store.export_npz(out) == 30
    back_x, back_y, names = read_npz(out)
    np.testing.assert_array_equal(back_x, x)
    np.testing.assert_array_equal(back_y, y)
    assert names == tuple(NAMES)
    with np.load(out, allow_pickle=False) as data:
        assert sorted(data.files) == ["class_names", "x", "y"]
    assert store.export_npz(out, unlabelled=True) == 31
    with SampleStore(tmp_path / "other.db") as other:
        assert other.import_npz(out) == 31
        assert other.class_names == tuple(NAMES)
        assert other.counts() == store.counts()
        again_x, again_y = other.load_arrays("all", unlabelled=True)
        np.testing.assert_array_equal(again_x[:30], x)
        assert again_y[-1] == -1
        assert other._db.execute("SELECT DISTINCT source FROM samples").fetchall() == [("import:export.npz",)]
    assert not list(tmp_path.glob(".export.npz.*"))         # no temporary file left behind


@pytest.mark.parametrize("arrays, message", [
    (dict(x=np.zeros((2, 3)), y=np.zeros(2, int)), "missing array"),
    (dict(x=np.zeros((2, 3)), y=np.array([0, 5]), class_names=np.array(["a", "b"])), "label 5 is outside -1..1"),
    (dict(x=np.zeros((2, 3)), y=np.zeros(3, int), class_names=np.array(["a"])), "y must be integers of shape"),
    (dict(x=np.full((2, 3), np.inf), y=np.zeros(2, int), class_names=np.array(["a"])), "NaN or inf"),
    (dict(x=np.zeros((2, 3)), y=np.zeros(2, int), class_names=np.array([{"a": 1}], dtype=object)),
     "holds pickled Python objects, refused"),
])
def test_bad_npz_files(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        read_npz(path)


def test_import_must_fit_the_store(store, tmp_path):
    store.add_sample(tagged(0, 0), 0)
    wrong_shape = tmp_path / "shape.npz"
    write_npz(wrong_shape, np.zeros((2, 5)), [0, 1], NAMES)
    with pytest.raises(ShapeError, match=r"shape \(5,\) but the store holds shape \(4,\)"):
        store.import_npz(wrong_shape)
    wrong_names = tmp_path / "names.npz"
    write_npz(wrong_names, np.zeros((2, 4)), [0, 1], ["x", "y", "z"])
    with pytest.raises(DataError, match="holds classes"):
        store.import_npz(wrong_names)
    assert len(store) == 1


def test_close_is_idempotent(store):
    store.close()
    store.close()
    with pytest.raises(DataError, match="closed"):
        len(store)


def test_default_path_follows_the_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert default_store_path() == tmp_path / "state" / "samples.db"


def test_read_dataset_keeps_the_store_split(store):
    for number in range(60):
        store.add_sample(tagged(number % 3, number), number % 3)
    x, y, eval_mask = read_dataset(store.path, NAMES, (4,))
    validation = sum(store.counts("val").values())
    assert 0 < validation < 60 and int(eval_mask.sum()) == validation and len(y) == 60
    # each row keeps its own label: the tag encodes it
    assert np.array_equal(x[:, 0] // 1000, y)
    # and its own side of the split: the tag's insertion number is the row id less one
    ids = (x[:, 0] % 1000).astype(int) + 1
    assert list(eval_mask) == [is_validation(i, store.validation_fraction) for i in ids]


def test_newest_reads_only_the_newest_of_a_class(store):
    for number in range(12):
        store.add_sample(tagged(number % 2, number), number % 2)
    newest = store.newest(1, 3)
    assert newest.shape == (3, 4) and list(newest[:, 0]) == [1007, 1009, 1011]
    assert store.newest(2, 5).shape == (0, 4)
