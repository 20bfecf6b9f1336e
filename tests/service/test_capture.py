"""The capture thread: pacing that a stop or a new interval cuts short, failures retried
with back-off (never the end of capturing), and the source/pin checks made at start."""

import logging
import threading
import time

import numpy as np
import pytest

from pi_backprop.exc import ConfigError, HardwareError
from pi_backprop.modeldef import load_definition
from pi_backprop.service import capture as capture_module
from pi_backprop.service.capture import Capture, SimulatedOperator, check_pins_for_classes, open_source
from pi_backprop.service.config import parse_config

DEADLINE = 10.0   # generous: a test waits at most this long for something that takes milliseconds


def wait_for(predicate, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def counting_read(fail_at=(), error=HardwareError("camera frame timed out")):
    """read() giving float32 [n] for the n-th call, raising ``error`` on the calls in ``fail_at``."""
    calls = []

    def read():
        calls.append(len(calls))
        if calls[-1] in fail_at:
            raise error
        return np.full(2, calls[-1], np.float32)
    return read, calls


@pytest.fixture
def stop():
    event = threading.Event()
    yield event
    event.set()


def drain(capture, count):
    samples = []
    assert wait_for(lambda: samples.append(capture.get()) or sum(s is not None for s in samples) >= count)
    return [s for s in samples if s is not None]


@pytest.mark.parametrize("error", [HardwareError("frame timed out"), OSError(5, "Input/output error"),
                                   RuntimeError("a bug in a driver")])
def test_failures_are_retried_with_growing_back_off_and_capturing_goes_on(monkeypatch, stop, caplog, error):
    monkeypatch.setattr(capture_module, "FIRST_BACKOFF", 0.01)
    read, calls = counting_read(fail_at={2, 3, 4}, error=error)
    waits = []
    real_wait = stop.wait
    monkeypatch.setattr(stop, "wait", lambda t=None: waits.append(t) or real_wait(t), raising=False)
    caplog.set_level(logging.INFO, logger="pi_backprop.service.capture")
    capture = Capture(read, lambda: 1, interval=0.0, stop_event=stop).start()
    samples = drain(capture, 4)
    stop.set()
    capture.join(DEADLINE)
    assert [int(s.x[0]) for s in samples[:4]] == [0, 1, 5, 6]   # the failed calls gave no sample
    assert all(s.label == 1 for s in samples)
    backoffs = [w for w in waits if w in (0.01, 0.02, 0.04)]
    assert backoffs[:3] == [0.01, 0.02, 0.04]                     # doubling while it keeps failing
    assert not capture.failing and capture.failures == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("capture failed (1 in a row)" in m for m in messages)
    assert any("capture works again after 3 failures" in m for m in messages)


def test_failing_flag_is_set_while_the_source_fails(monkeypatch, stop):
    monkeypatch.setattr(capture_module, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(capture_module, "MAX_BACKOFF", 0.02)
    read, calls = counting_read(fail_at=set(range(10**6)))
    capture = Capture(read, lambda: None, interval=0.0, stop_event=stop).start()
    assert wait_for(lambda: capture.failures >= 5)
    assert capture.failing and capture.get() is None
    stop.set()
    capture.join(DEADLINE)
    assert not capture._thread.is_alive()


def test_stop_ends_an_hour_long_interval_at_once(stop):
    read, calls = counting_read()
    capture = Capture(read, lambda: None, interval=3600, stop_event=stop).start()
    drain(capture, 1)
    stop.set()
    capture.join(DEADLINE)
    assert not capture._thread.is_alive() and len(calls) == 1


def test_a_shorter_interval_applies_during_a_long_wait(stop):
    read, calls = counting_read()
    capture = Capture(read, lambda: None, interval=3600, stop_event=stop).start()
    drain(capture, 1)
    capture.interval = 0.01        # what SIGHUP does
    samples = drain(capture, 3)
    assert len(calls) >= 4 and [int(s.x[0]) for s in samples[:3]] == [1, 2, 3]


def test_a_full_queue_drops_samples_but_keeps_capturing(stop):
    read, calls = counting_read()
    capture = Capture(read, lambda: None, interval=0.0, stop_event=stop).start()
    assert wait_for(lambda: len(calls) > capture_module.QUEUE_SIZE + 10)
    assert capture._queue.qsize() == capture_module.QUEUE_SIZE
    assert capture.captured == len(calls) or capture.captured == len(calls) - 1


class FakeSource:
    def __init__(self):
        self.shown = []

    def show(self, label):
        self.shown.append(label)


def test_simulated_operator_shows_each_class_for_hold_captures_and_labels_it():
    source = FakeSource()
    operator = SimulatedOperator(source, 4, hold=3, seed=0)
    labels = []
    for _ in range(12):
        operator.before_capture()
        labels.append(operator.label())
    assert labels[0:3] == [labels[0]] * 3 and labels[3:6] == [labels[3]] * 3
    assert source.shown == [labels[0], labels[3], labels[6], labels[9]]
    operator.enabled = False
    operator.before_capture()
    assert operator.label() is None and source.shown[-1] is None


MODEL_CLASSES = {"sensor_mlp": 4, "camera_cnn": 10}


@pytest.mark.parametrize("key, model, pins, ok", [
    ("labels.pins", "sensor_mlp", [5, 6, 12, 13], True),
    ("labels.pins", "sensor_mlp", [5, 6, 12], False),
    ("labels.pins", "camera_cnn", [5, 6, 12, 13], False),
    ("lights.class_pins", "sensor_mlp", [5, -1, 12, 13], True),
    ("lights.class_pins", "sensor_mlp", [5, 6, 12, 13, 16], False),
    ("labels.pins", "sensor_mlp", [], True),
])
def test_per_class_pin_lists_must_match_the_class_count(key, model, pins, ok):
    section, name = key.split(".")
    config = parse_config({"model": {"name": model}, section: {name: pins}})
    definition = load_definition(model)
    if ok:
        check_pins_for_classes(config, definition)
        return
    with pytest.raises(ConfigError) as error:
        check_pins_for_classes(config, definition)
    message = str(error.value)
    assert key in message and f"{len(pins)} pins" in message and f"{MODEL_CLASSES[model]} classes" in message
    assert "\n" not in message


@pytest.mark.parametrize("model, kind, fragment", [
    ("sensor_mlp", "simulated-camera", "use a sensor source"),
    ("camera_cnn", "simulated-sensor", "use a camera source"),
])
def test_a_source_that_does_not_fit_the_model_is_a_config_error(model, kind, fragment):
    import contextlib
    config = parse_config({"model": {"name": model}, "source": {"kind": kind}})
    with contextlib.ExitStack() as stack, pytest.raises(ConfigError, match=fragment):
        open_source(config, load_definition(model), stack, simulate=False)


def test_camera_on_a_desktop_names_simulate_and_simulate_overrides_it(monkeypatch):
    import contextlib

    from pi_backprop.hardware import pins
    if pins.pi_model() is not None:
        pytest.skip("this is a Raspberry Pi")
    try:
        import picamera2  # noqa: F401
        pytest.skip("picamera2 is installed: the desktop message cannot be seen here")
    except ImportError:
        pass
    config = parse_config({"model": {"name": "camera_cnn"}, "source": {"kind": "camera"}})
    definition = load_definition("camera_cnn")
    with contextlib.ExitStack() as stack, pytest.raises(HardwareError) as error:
        open_source(config, definition, stack, simulate=False)
    assert "--simulate" in str(error.value) and "picamera2" in str(error.value)
    with contextlib.ExitStack() as stack:
        read, simulated = open_source(config, definition, stack, simulate=True)
        x = read()
    assert simulated is not None and x.shape == definition.input_shape and x.dtype == np.float32


def test_a_real_sensor_off_a_pi_is_one_line_not_mock_readings(monkeypatch):
    import contextlib

    from pi_backprop.hardware import pins

    monkeypatch.setattr(pins, "pi_model", lambda *args: None)
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    config = parse_config({"source": {"kind": "sensor"}})
    with contextlib.ExitStack() as stack, pytest.raises(HardwareError, match="not a Raspberry Pi: use --simulate"):
        open_source(config, load_definition("sensor_mlp"), stack, simulate=False)
