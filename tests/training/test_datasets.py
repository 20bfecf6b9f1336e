"""Data sources for `train --data`: .npz validation, simulated sources, the held-out split."""

import pickle
import re

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop.exc import DataError
from pi_backprop.training.datasets import Dataset, held_out_mask, open_dataset

SENSOR = pb.load_definition("sensor_mlp")
CAMERA = pb.load_definition("camera_cnn")


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_round_trip(tmp_path, rng):
    x = rng.random((50, 32), dtype=np.float32)
    y = rng.integers(0, 4, 50)
    data = open_dataset(write_npz(tmp_path / "d.npz", x=x, y=y), SENSOR)
    assert data.x.dtype == np.float32 and data.x.tobytes() == x.tobytes()
    assert data.y.dtype == np.int64 and (data.y == y).all()
    assert sorted(np.concatenate([data.train_index, data.eval_index]).tolist()) == list(range(50))
    assert data.describe()["samples"] == 50 and len(data.fingerprint) == 64


def test_grey_images_without_channel_axis_and_uint8_scaling(tmp_path, rng):
    x = rng.integers(0, 256, (20, 28, 28)).astype(np.uint8)
    data = open_dataset(write_npz(tmp_path / "d.npz", x=x, y=np.arange(20) % 10), CAMERA)
    assert data.x.shape == (20, 1, 28, 28) and data.x.dtype == np.float32
    np.testing.assert_allclose(data.x[:, 0], x / 255, rtol=1e-6)


GOOD_X = np.zeros((10, 32), np.float32)
GOOD_Y = np.arange(10) % 4
NAN_X = GOOD_X.copy()
NAN_X[7, 3] = np.nan


@pytest.mark.parametrize("arrays, message", [
    ({"x": GOOD_X}, r"has no array 'y' \(found: x\)"),
    ({"x": GOOD_X[:, :31], "y": GOOD_Y}, r"x has shape \(10, 31\), model 'sensor_mlp' needs \(N, 32\)"),
    ({"x": GOOD_X, "y": GOOD_Y[:9]}, r"y has shape \(9,\), expected \(10,\)"),
    ({"x": GOOD_X, "y": GOOD_Y + 1}, r"label 4 of sample 3 is out of range; model 'sensor_mlp' has 4 classes \(0..3\)"),
    ({"x": GOOD_X, "y": GOOD_Y - 1}, "label -1 of sample 0 is out of range"),
    ({"x": GOOD_X, "y": GOOD_Y + 0.5}, "y must hold integer class labels"),
    ({"x": NAN_X, "y": GOOD_Y}, r"sample 7 of x holds NaN or inf \(1 such samples\)"),
    ({"x": GOOD_X[:0], "y": GOOD_Y[:0]}, "holds no samples"),
    ({"x": GOOD_X.astype(str), "y": GOOD_Y}, "x must be numeric"),
    ({"x": GOOD_X, "y": GOOD_Y, "classes": np.array(["a", "b", "c", "d"])}, "its classes .* differ"),
])
def test_bad_npz_is_one_line_data_error(tmp_path, arrays, message):
    path = write_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message) as caught:
        open_dataset(path, SENSOR)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_npz_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([_Payload(marker)], dtype=object), y=GOOD_Y)
    with pytest.raises(DataError, match="holds pickled Python objects, refused"):
        open_dataset(path, SENSOR)
    assert not marker.exists()
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(DataError, match="pickle"):
        open_dataset(raw, SENSOR)
    assert not marker.exists()


@pytest.mark.parametrize("spec, message", [
    ("data.csv", "is not understood"),
    ("missing.npz", "does not exist"),
    ("missing.db", "does not exist"),
    ("sim:radar", "unknown simulated source 'radar'"),
    ("sim:sensor?n=abc", "n must be an integer"),
    ("sim:sensor?rows=3", "unknown option 'rows'"),
    ("sim:sensor?n=0", "n must be between 1 and"),
])
def test_bad_specs(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=message):
        open_dataset(spec, SENSOR)


def test_sim_sources_fit_and_are_deterministic():
    a = open_dataset("sim:sensor?n=64&seed=3", SENSOR)
    b = open_dataset("sim:sensor?n=64&seed=3", SENSOR)
    c = open_dataset("sim:sensor?n=64&seed=4", SENSOR)
    assert a.x.shape == (64, 32) and a.fingerprint == b.fingerprint != c.fingerprint
    camera = open_dataset("sim:camera?n=12", CAMERA)
    assert camera.x.shape == (12, 1, 28, 28) and set(camera.y.tolist()) <= set(range(10))
    with pytest.raises(DataError, match="sim:sensor gives vectors, but model 'camera_cnn' takes images"):
        open_dataset("sim:sensor", CAMERA)
    with pytest.raises(DataError, match="does not fit model 'seed_mlp'"):
        open_dataset("sim:sensor?n=8", pb.load_definition("seed_mlp"))


def test_sample_store_as_data(tmp_path):
    from pi_backprop.hardware.simulated import sensor_dataset
    from pi_backprop.storage.store import SampleStore

    x, y = sensor_dataset(50, seed=3)
    with SampleStore(tmp_path / "samples.db") as store:
        store.set_class_names(SENSOR.classes)
        store.add_samples(x, y, "test")
        validation = sum(store.counts("val").values())
    dataset = open_dataset(tmp_path / "samples.db", SENSOR)
    assert len(dataset) == 50 and len(dataset.eval_index) == validation
    assert sorted(map(tuple, dataset.x.tolist())) == sorted(map(tuple, x.tolist()))
    with pytest.raises(DataError, match="classes"):
        open_dataset(tmp_path / "samples.db", pb.load_definition("camera_cnn"))


def test_held_out_split_is_stable_as_data_grows():
    small, large = held_out_mask(1000), held_out_mask(20000)
    assert (large[:1000] == small).all()
    assert 0.18 < large.mean() < 0.22
    data = Dataset.from_arrays(np.zeros((2, 32)), np.array([0, 1]), SENSOR)
    assert len(data.train_index) >= 1


def test_exported_class_names_are_checked_against_the_model(tmp_path):
    """`data export` writes class_names: a file of other classes is refused, not trained on."""
    from pi_backprop.storage.store import write_npz

    x, y = np.zeros((6, 32), np.float32), np.arange(6) % 2
    write_npz(tmp_path / "two.npz", x, y, ("a", "b"))
    with pytest.raises(DataError, match="classes"):
        open_dataset(tmp_path / "two.npz", SENSOR)
    write_npz(tmp_path / "four.npz", x, y, SENSOR.classes)
    assert len(open_dataset(tmp_path / "four.npz", SENSOR)) == 6


@pytest.mark.parametrize("content, fragment", [
    (b"hello", "its first bytes are neither"),
    (pickle.dumps({"x": 1}), "pickled Python data, refused"),
    (b"", "it is empty"),
])
def test_a_file_that_is_no_npz_says_what_it_is(tmp_path, content, fragment):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(fragment)):
        open_dataset(path, SENSOR)
