"""The simulated camera and sensor: determinism, class coverage, and learnability."""

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop.exc import ConfigError, HardwareError
from pi_backprop.hardware.simulated import (
    CAMERA_CLASSES,
    SENSOR_CLASSES,
    SimulatedCamera,
    SimulatedSensor,
    camera_dataset,
    render_frames,
    sensor_dataset,
)
from pi_backprop.nn import backend as backend_module


def test_model_files_name_the_simulated_classes():
    assert pb.load_definition("camera_cnn").classes == CAMERA_CLASSES
    assert pb.load_definition("sensor_mlp").classes == SENSOR_CLASSES


@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 16, 24), (1, 12, 8)])
def test_camera_dataset_shapes_ranges_and_cycling_labels(input_shape):
    x, y = camera_dataset(23, seed=3, input_shape=input_shape)
    assert x.shape == (23,) + input_shape and x.dtype == np.float32
    assert y.dtype == np.int64 and y.tolist() == [i % 10 for i in range(23)]
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.std() > 0.05  # not blank


def test_camera_dataset_larger_n_extends_smaller_and_seed_matters():
    small, _ = camera_dataset(7, seed=1)
    large, _ = camera_dataset(300, seed=1)   # crosses a rendering chunk boundary
    assert np.array_equal(small, large[:7])
    assert np.array_equal(camera_dataset(300, seed=1)[0], large)
    assert not np.array_equal(camera_dataset(7, seed=2)[0], small)


@pytest.mark.parametrize("names", [("empty", "circle"), ("x", "ring", "square"), CAMERA_CLASSES[:4]])
def test_camera_dataset_with_a_subset_of_classes(names):
    x, y = camera_dataset(12, seed=0, class_names=names)
    assert x.shape == (12, 1, 28, 28)
    assert y.tolist() == [i % len(names) for i in range(12)]
    # The scene (position, size, lighting) of sample i does not depend on the class list,
    # so the same class at the same index gives the same picture.
    full_x, full_y = camera_dataset(12, seed=0)
    matches = [i for i in range(12) if names[y[i]] == CAMERA_CLASSES[full_y[i]]]
    assert matches
    for i in matches:
        assert np.array_equal(full_x[i], x[i])


def test_a_makers_own_class_names_show_the_kinds_no_class_is_named_after():
    x, _ = camera_dataset(4, 0, class_names=("circle", "banana"))
    shown, _ = camera_dataset(4, 0, class_names=("circle", "empty"))   # empty: the first kind left over
    np.testing.assert_array_equal(x, shown)
    x, _ = sensor_dataset(4, 0, class_names=("walking", "still"))
    shown, _ = sensor_dataset(4, 0, class_names=("slow_wave", "still"))
    np.testing.assert_array_equal(x, shown)


def test_more_classes_than_the_simulation_shows_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="the simulated camera shows 10 kinds of thing .*a model of 11 classes"):
        camera_dataset(4, 0, class_names=[f"c{i}" for i in range(11)])
    with pytest.raises(ConfigError, match="the simulated sensor shows 4 kinds"):
        sensor_dataset(4, 0, class_names=("a", "b", "c", "d", "e"))


def test_empty_frames_are_flat_and_filled_shapes_are_bright_in_the_centre():
    x, y = camera_dataset(40, seed=0)
    assert x[y == 0].std(axis=(1, 2, 3)).max() < 0.1
    filled = (y != 0) & (y != CAMERA_CLASSES.index("ring"))   # a ring is dark in the middle
    centre = x[filled, 0, 11:17, 11:17].max(axis=(1, 2))
    corner = x[filled, 0, :4, :4].mean(axis=(1, 2))
    assert np.all(centre > corner + 0.2)


def test_simulated_camera_frames_are_deterministic_and_follow_show():
    with SimulatedCamera(seed=5, resolution=(64, 48)) as first, SimulatedCamera(seed=5, resolution=(64, 48)) as second:
        first.show("triangle")
        second.show(3)
        a, b = first.capture(), second.capture()
        assert a.shape == (48, 64, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b) and first.last_label == 3
        first.show(None)
        labels = {first.capture() is not None and first.last_label for _ in range(40)}
        assert len(labels) > 5  # random classes when nothing is shown
    # A capture renders exactly what render_frames gives for that index and class.
    with SimulatedCamera(seed=5, resolution=(64, 48)) as camera:
        camera.capture()
        camera.show("ring")
        assert np.array_equal(camera.capture(), render_frames([5], 5, (64, 48), first_index=1)[0])


def test_simulated_camera_rejects_unknown_class_and_closed_use():
    camera = SimulatedCamera(class_names=("empty", "circle"))
    with pytest.raises(ConfigError, match="no class 'square'"):
        camera.show("square")
    camera.close()
    camera.close()  # idempotent
    with pytest.raises(HardwareError, match="closed"):
        camera.capture()


def test_simulated_camera_captures_are_spaced_by_the_interval():
    now, sleeps = [0.0], []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds
    camera = SimulatedCamera(resolution=(32, 24), interval=1.5, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        camera.capture()
        now[0] += 0.5
    assert sleeps == pytest.approx([1.0, 1.0])


def test_simulated_camera_input_matches_dataset_preprocessing():
    camera = SimulatedCamera(seed=0)
    camera.show("hbar")
    x = camera.capture_input((1, 28, 28))
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    rows, cols = x[0].mean(axis=1), x[0].mean(axis=0)
    # A horizontal bar: brightness varies more from row to row than from column to column.
    assert rows.std() > 1.5 * cols.std()


def test_sensor_dataset_shapes_determinism_and_extension():
    x, y = sensor_dataset(50, seed=2, features=32)
    assert x.shape == (50, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert y.tolist() == [i % 4 for i in range(50)]
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(sensor_dataset(10, seed=2)[0], x[:10])
    assert not np.array_equal(sensor_dataset(10, seed=3)[0], x[:10])


def test_sensor_classes_have_their_signatures():
    x, y = sensor_dataset(400, seed=0, features=64)
    spread = {name: x[y == k].std(axis=1) for k, name in enumerate(SENSOR_CLASSES)}
    assert spread["still"].max() < min(spread[name].min() for name in ("slow_wave", "fast_wave", "spikes"))
    # Zero crossings about the window mean: many for the fast wave, few for the slow one.
    def crossings(windows):
        centred = windows - windows.mean(axis=1, keepdims=True)
        return (np.diff(np.sign(centred), axis=1) != 0).sum(axis=1)
    assert crossings(x[y == 2]).min() > crossings(x[y == 1]).max()


def test_simulated_sensor_value_stream_is_deterministic_and_switches_class():
    first, second = SimulatedSensor(seed=4), SimulatedSensor(seed=4)
    first.show("fast_wave")
    second.show("fast_wave")
    a = [first.value for _ in range(300)]
    b = [second.value for _ in range(300)]
    assert a == b and first.last_label == 2 and all(0.0 <= v <= 1.0 for v in a)
    first.show("still")
    still = np.array([first.value for _ in range(64)])
    assert first.last_label == 0 and still.std() < np.std(a[:64])
    with SimulatedSensor() as sensor:
        pass
    with pytest.raises(HardwareError, match="closed"):
        sensor.value


@pytest.fixture
def numpy_backend():
    previous = backend_module.current
    pb.set_backend("numpy")   # the reference backend: no JIT compile time in this test
    yield
    backend_module.current = previous


def _train(definition, x, y, n_train, epochs, lr=None, seed=0):
    """Held-out accuracy after ``epochs`` passes over the first ``n_train`` samples."""
    model = definition.build(seed=seed)
    loss = definition.make_loss()
    lr = lr or definition.training["lr"]
    optimizer = pb.Adam(model, lr=lr)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        optimizer.lr = lr if epoch < epochs - 1 else lr * 0.25  # settle in the last epoch
        order = rng.permutation(n_train)
        for start in range(0, n_train, 32):
            batch = order[start:start + 32]
            model.train_step(x[batch], y[batch], loss, optimizer)
    return float(np.mean(model.predict(x[n_train:]).argmax(axis=1) == y[n_train:])), model


def test_sensor_dataset_is_learnable_by_sensor_mlp(numpy_backend):
    definition = pb.load_definition("sensor_mlp")
    x, y = sensor_dataset(2400, seed=0, features=definition.input_shape[0])
    accuracy, _ = _train(definition, x, y, n_train=2000, epochs=12)
    assert accuracy >= 0.95


def test_camera_dataset_is_learnable_by_camera_cnn(numpy_backend):
    definition = pb.load_definition("camera_cnn")
    x, y = camera_dataset(1400, seed=0, input_shape=definition.input_shape)
    # ~250 Adam steps (about 2 s here); twice the model's default lr keeps the test short.
    accuracy, model = _train(definition, x, y, n_train=1000, epochs=8, lr=0.004)
    assert accuracy >= 0.95
    # Live frames (320x240, area-averaged down) look like the data set to the model.
    camera = SimulatedCamera(seed=9)
    live, labels = [], []
    for k in range(100):
        camera.show(k % len(CAMERA_CLASSES))
        live.append(camera.capture_input(definition.input_shape))
        labels.append(camera.last_label)
    live_accuracy = float(np.mean(model.predict(np.stack(live)).argmax(axis=1) == np.array(labels)))
    assert live_accuracy >= 0.9
