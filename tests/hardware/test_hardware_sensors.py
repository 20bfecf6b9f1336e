"""SensorSource: windows from devices with a .value, bad readings skipped, pacing by rate."""

import numpy as np
import pytest

from pi_backprop.exc import ConfigError, HardwareError
from pi_backprop.hardware.pacing import Pacer
from pi_backprop.hardware.sensors import SensorSource, open_adc_channel
from pi_backprop.hardware.simulated import SimulatedSensor, sensor_dataset


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedDevice:
    """A device whose readings are a script; an Exception in it is raised on that read."""

    def __init__(self, script):
        self.script = list(script)
        self.closed = 0

    @property
    def value(self):
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.closed += 1


def source(devices, clock=None, **kwargs):
    clock = clock or FakeClock()
    return SensorSource(devices, clock=clock, sleep=clock.sleep, **kwargs)


def test_window_is_read_at_the_configured_rate():
    clock = FakeClock()
    with source([ScriptedDevice(np.linspace(0, 1, 8))], clock, window=8, rate=50.0) as sensors:
        x = sensors.read_window()
    assert x.dtype == np.float32 and x.shape == (8,)
    np.testing.assert_allclose(x, np.linspace(0, 1, 8), rtol=1e-6)
    # First reading at once, then one every 1/50 s.
    assert clock.sleeps == pytest.approx([0.02] * 7)


def test_devices_are_concatenated_channel_after_channel():
    a, b = ScriptedDevice([0.1, 0.2, 0.3]), ScriptedDevice([0.7, 0.8, 0.9])
    with source([a, b], window=3) as sensors:
        assert sensors.features == 6
        np.testing.assert_allclose(sensors.read_window(), [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], rtol=1e-6)
    assert (a.closed, b.closed) == (1, 1)


def test_out_of_range_and_failed_readings_are_logged_and_skipped(caplog):
    device = ScriptedDevice([0.1, 1.7, OSError("SPI timeout"), float("nan"), 0.2, -0.5, 0.3])
    with source([device], window=3) as sensors:
        np.testing.assert_allclose(sensors.read_window(), [0.1, 0.2, 0.3], rtol=1e-6)
        assert sensors.skipped == 4
    messages = [r.getMessage() for r in caplog.records]
    assert any("did not answer: SPI timeout" in m for m in messages)
    assert any("reading 1.7 is outside 0..1: skipped" in m for m in messages)


def test_a_dead_device_gives_a_hardware_error_and_the_source_stays_usable():
    device = ScriptedDevice([OSError("gone")] * 5 + [0.4, 0.5])
    with source([device], window=2, max_failures=5) as sensors:
        with pytest.raises(HardwareError, match=r"sensor 0 .* gave no usable reading 5 times in a row"):
            sensors.read_window()
        np.testing.assert_allclose(sensors.read_window(), [0.4, 0.5], rtol=1e-6)


@pytest.mark.parametrize("normalise, value_range, expected", [
    (None, (0, 1), [0.2, 0.4, 0.6]),
    ("range", (0, 2), [0.1, 0.2, 0.3]),
    ("centre", (0, 1), [-0.2, 0.0, 0.2]),
])
def test_normalisation(normalise, value_range, expected):
    with source([ScriptedDevice([0.2, 0.4, 0.6])], window=3, normalise=normalise, value_range=value_range) as s:
        np.testing.assert_allclose(s.read_window(), expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 0}, "window must be a positive number"),
    ({"rate": 0}, "rate must be > 0"),
    ({"value_range": (1, 0)}, "low < high"),
    ({"normalise": "zscore"}, "normalise must be one of"),
])
def test_bad_sensor_config_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        source([ScriptedDevice([])], **kwargs)


def test_simulated_sensor_through_the_source_looks_like_the_dataset():
    sensor = SimulatedSensor(seed=0)
    with source([sensor], window=32, own_devices=False) as sensors:
        windows = {}
        for label in ("still", "fast_wave"):
            sensor.show(label)
            windows[label] = np.stack([sensors.read_window() for _ in range(10)])
    x, y = sensor_dataset(200, seed=0)
    # Window spread: live still windows are as quiet as dataset ones, fast waves as lively.
    assert windows["still"].std(axis=1).max() < x[y == 1].std(axis=1).min()
    assert windows["fast_wave"].std(axis=1).min() > x[y == 0].std(axis=1).max()
    assert not sensor.closed   # not ours to close


def test_digital_input_device_on_mock_pins_is_a_sensor():
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory
    factory = MockFactory()
    try:
        device = gpiozero.DigitalInputDevice(4, pin_factory=factory)
        pin = factory.pin(4)
        readings = iter([False, True, True])

        def sleep(seconds):      # the "wire" changes between readings
            pin.drive_high() if next(readings) else pin.drive_low()
        clock = FakeClock()
        with SensorSource([device], window=3, clock=clock, sleep=sleep) as sensors:
            pin.drive_low()
            np.testing.assert_allclose(sensors.read_window(), [0, 0, 1])
        assert device.closed
    finally:
        factory.close()


def test_unknown_adc_chip_or_channel_is_a_config_error():
    with pytest.raises(ConfigError, match="sensor chip 'mcp9999' is unknown"):
        open_adc_channel("mcp9999", 0)
    with pytest.raises(ConfigError, match="mcp3004 channel must be 0..3"):
        open_adc_channel("MCP3004", 4)


def test_mcp3008_on_mock_pins_reads_values_in_range(monkeypatch):
    pytest.importorskip("gpiozero")
    from pi_backprop.hardware import pins
    monkeypatch.setattr(pins, "_chosen", None)
    factory = pins.pin_factory(simulate=True)
    try:
        with SensorSource([open_adc_channel("mcp3008", 2, pin_factory=factory)], window=4,
                          clock=FakeClock(), sleep=lambda s: None) as sensors:
            x = sensors.read_window()
        assert x.shape == (4,) and np.all((0 <= x) & (x <= 1))
    finally:
        pins.reset_pin_factory()


def test_pacer_keeps_the_average_rate_and_does_not_burst_after_a_stall():
    clock = FakeClock()
    pacer = Pacer(0.5, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 0.2                       # work took 0.2 s: sleep the rest
    assert pacer.wait() == pytest.approx(0.3)
    clock.now += 3.0                       # a long stall: no burst of zero sleeps after it
    assert pacer.wait() == 0.0
    assert pacer.wait() == pytest.approx(0.5)
