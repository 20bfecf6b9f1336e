"""Sensor source: readings from gpiozero input devices, cut into fixed-length windows.

A window is what ``models/sensor_mlp.toml`` takes as one input: ``window`` consecutive
readings of each device, sampled ``rate`` times a second, channel after channel.
"""

import logging
import math

import numpy as np

from ..exc import ConfigError, HardwareError
from .device import Device
from .pacing import Pacer
from .pins import import_gpiozero, open_device
from .pins import pin_factory as default_pin_factory

_log = logging.getLogger(__name__)

NORMALISATIONS = (None, "range", "centre")
# gpiozero's MCP3xxx family: class name -> number of channels.
ADC_CHIPS = {"mcp3001": 1, "mcp3002": 2, "mcp3004": 4, "mcp3008": 8, "mcp3201": 1, "mcp3202": 2,
             "mcp3204": 4, "mcp3208": 8, "mcp3301": 1, "mcp3302": 4, "mcp3304": 8}


def open_adc_channel(chip: str = "mcp3008", channel: int = 0, *, pin_factory=None, **spi_args):
    """A gpiozero ADC channel (``MCP3008(channel=...)`` etc.); its ``.value`` is in [0, 1].

    chip     : "mcp3008" (default) or another gpiozero MCP3xxx class name, any case
    channel  : 0 .. channels - 1
    spi_args : passed to gpiozero (e.g. port=0, device=0 for CE0)
    """
    name = str(chip).lower()
    if name not in ADC_CHIPS:
        raise ConfigError(f"sensor chip {chip!r} is unknown; choose one of {', '.join(ADC_CHIPS)}")
    if not (isinstance(channel, int) and 0 <= channel < ADC_CHIPS[name]):
        raise ConfigError(f"{name} channel must be 0..{ADC_CHIPS[name] - 1}, got {channel!r}")
    gpiozero = import_gpiozero()
    factory = pin_factory or default_pin_factory()
    cls = getattr(gpiozero, name.upper())
    kwargs = {} if ADC_CHIPS[name] == 1 else {"channel": channel}
    where = ", ".join(f"{k}={v}" for k, v in spi_args.items()) or "SPI port 0, device 0"
    return open_device(lambda: cls(pin_factory=factory, **kwargs, **spi_args), f"{name} channel {channel}", where)


class SensorSource(Device):
    """Reads devices at a fixed rate into windows of readings.

    devices       : objects with a ``.value`` (gpiozero ``MCP3008`` channels, ``LightSensor``,
                    ``DistanceSensor``..., or ``SimulatedSensor``); closed by ``close()``
                    only if ``own_devices`` is true
    window        : readings per device per window (the model's input size / len(devices))
    rate          : readings per second, per device (all devices are read together)
    value_range   : (low, high): a reading outside it is logged and skipped
    normalise     : None (raw), "range" (map value_range to [0, 1]) or "centre" (subtract
                    each channel's window mean)
    max_failures  : consecutive failed or skipped reads of one device before
                    ``read_window`` gives up with a ``HardwareError`` (the caller retries later)
    clock, sleep  : injectable time functions (tests)

    ``read_window() -> float32 (len(devices) * window,)``: device 0's readings, then
    device 1's, ... ``skipped`` counts readings dropped. A context manager.
    """

    device_name = "sensor source"

    def __init__(self, devices, *, window=32, rate=50.0, value_range=(0.0, 1.0), normalise=None,
                 max_failures=50, own_devices=True, clock=None, sleep=None):
        self.devices = list(devices)
        if not self.devices:
            raise ConfigError("sensor source: give at least one device")
        if not (isinstance(window, int) and window >= 1):
            raise ConfigError(f"sensor window must be a positive number of readings, got {window!r}")
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ConfigError(f"sensor rate must be > 0 readings per second, got {rate!r}")
        low, high = (float(v) for v in value_range)
        if not low < high:
            raise ConfigError(f"sensor value_range must be (low, high) with low < high, got {value_range!r}")
        if normalise not in NORMALISATIONS:
            raise ConfigError(f"sensor normalise must be one of none, range, centre, got {normalise!r}")
        self.window, self.rate = window, float(rate)
        self.value_range = (low, high)
        self.normalise = normalise
        self.max_failures = int(max_failures)
        self.own_devices = own_devices
        self.skipped = 0
        pacer_kwargs = {k: v for k, v in (("clock", clock), ("sleep", sleep)) if v is not None}
        self._pacer = Pacer(1.0 / self.rate, **pacer_kwargs)

    @property
    def features(self) -> int:
        """Length of one window vector: devices x window."""
        return len(self.devices) * self.window

    def _read(self, index):
        """One reading of device ``index`` as a float, or None (logged) if unusable."""
        device = self.devices[index]
        try:
            value = float(device.value)
        except Exception as error:  # a sensor that stops answering must not stop the loop
            _log.warning("sensor %d (%r) did not answer: %s", index, device, error)
            return None
        low, high = self.value_range
        if not (math.isfinite(value) and low <= value <= high):
            _log.warning("sensor %d reading %r is outside %g..%g: skipped", index, value, low, high)
            return None
        return value

    def read_window(self) -> np.ndarray:
        """The next window: float32 (features,), read at ``rate``; blocks window / rate seconds."""
        self._ensure_open()
        columns = [[] for _ in self.devices]
        failures = [0] * len(self.devices)
        while min(len(c) for c in columns) < self.window:
            self._pacer.wait()
            for index, column in enumerate(columns):
                if len(column) >= self.window:
                    continue
                value = self._read(index)
                if value is None:
                    self.skipped += 1
                    failures[index] += 1
                    if failures[index] >= self.max_failures:
                        raise HardwareError(f"sensor {index} ({self.devices[index]!r}) gave no usable reading "
                                            f"{failures[index]} times in a row; check its wiring and value_range")
                    continue
                failures[index] = 0
                column.append(value)
        x = np.asarray(columns, dtype=np.float32)
        if self.normalise == "range":
            low, high = self.value_range
            x = (x - np.float32(low)) / np.float32(high - low)
        elif self.normalise == "centre":
            x = x - x.mean(axis=1, keepdims=True)
        return x.reshape(-1)

    def _release(self) -> None:
        """Close the devices (if owned)."""
        if self.own_devices:
            for device in self.devices:
                close = getattr(device, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:
                        _log.debug("closing %r failed", device, exc_info=True)

    def __repr__(self):
        return f"SensorSource({len(self.devices)} device(s), window={self.window}, rate={self.rate:g}/s)"
