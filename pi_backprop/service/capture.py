"""Samples from the configured source, taken in a background thread.

The capture thread owns the camera or sensor: it paces captures, turns each frame or window
into a model input, asks the label buttons (or the simulated operator) for the label at
that moment, and hands ``Sample`` objects to the service through a bounded queue. A failing
source is retried with back-off; the service keeps training meanwhile.
"""

import dataclasses
import logging
import os
import queue
import threading
import time

import numpy as np

from ..exc import ConfigError, HardwareError, PiBackpropError

_log = logging.getLogger(__name__)

QUEUE_SIZE = 64            # samples waiting for the service loop; beyond this the oldest wait is lost
FIRST_BACKOFF = 1.0        # seconds before the first retry of a failing source; doubles each time
MAX_BACKOFF = 60.0         # seconds between retries of a failing source, at most
RECHECK = 0.5              # seconds between looks at a changed interval while waiting


@dataclasses.dataclass(frozen=True)
class Sample:
    """One model input: ``x`` float32 (input_shape), ``label`` int or None, ``time`` (epoch
    seconds); ``shown`` is what a simulated source really showed (None for real hardware)."""

    x: np.ndarray
    label: int | None
    time: float
    shown: int | None = None


class SimulatedOperator:
    """Stands in for a person at the label buttons: shows each class to the simulated source
    for ``hold`` captures in turn, holding that class's button (a mock pin) meanwhile, or,
    when no buttons are wired, holding its label through ``commands`` (``label_start``) as a
    person at the web page would.

    ``label()`` is the label it means for the capture just made (None when not ``enabled``).
    It steps aside while a real person labels (``person()``: the class they hold, or None;
    ``Labelling.ruling_class``),
    and while not ``enabled`` (``labels.simulated`` turned off live): then ``when_off()`` is
    called before each capture instead (``follow_labels``), or the source shows random classes.
    """

    SOURCE = "simulated operator"

    def __init__(self, source, num_classes, *, buttons=None, button_pins=None, hold=4, seed=0, commands=None,
                 when_off=None, person=None):
        self.source, self.num_classes, self.hold = source, num_classes, hold
        self.buttons, self.button_pins, self.commands = buttons, button_pins or {}, commands
        self.when_off, self.person = when_off, person
        self._rng = np.random.default_rng((seed, 0x0BE7))
        self._count, self._showing, self._pressed, self._sent = 0, None, None, None
        self.enabled = True

    def before_capture(self):
        """Choose what is shown next, and press its button (or send its label)."""
        if not self.enabled or (self.person is not None and self.person() is not None):
            self._release()
            self._send(None)
            self._count, self._showing = 0, None    # its own turns start afresh afterwards
            if self.when_off is not None:
                self.when_off()
            else:
                self.source.show(None)
            return
        if self._count % self.hold == 0:
            self._showing = int(self._rng.integers(self.num_classes))
            self.source.show(self._showing)
            self._release()
            pin = self.button_pins.get(self._showing)
            if pin is not None:
                pin.drive_low()            # buttons are wired to ground: pressed is low
                self._pressed = pin
            self._send(self._showing)
        self._count += 1

    def label(self):
        """The label for the capture just made."""
        if not self.enabled:
            return None
        if self.buttons is not None:
            return self.buttons.take_label()
        return self._showing

    def _send(self, label):
        if self.commands is None or self.buttons is not None or label == self._sent:
            return
        self._sent = label
        if label is None:
            self.commands.submit("label_stop", source=self.SOURCE)
        else:
            self.commands.submit("label_start", label=label, source=self.SOURCE)

    def _release(self):
        if self._pressed is not None:
            self._pressed.drive_high()
            self._pressed = None

    def close(self):
        self._release()


def follow_labels(source, labelling):
    """A ``before`` for ``Capture``: the simulated ``source`` shows the class a person is
    labelling (from the web page, the buttons, MQTT), as they would hold that thing in front
    of a real camera, and random classes while nobody labels."""
    def before():
        source.show(labelling.peek())
    return before


class Capture:
    """Runs ``read()`` in a thread every ``interval`` seconds, queueing ``Sample`` objects.

    read      : callable() -> float32 model input (blocks as long as the hardware needs)
    labeller  : callable() -> int | None, called right after each read
    interval  : seconds between captures (settable while running)
    before    : optional callable() before each read (the simulated operator)
    shown     : optional callable() -> int | None, what a simulated source showed
    ``failing`` is True while the source fails; ``get(timeout)`` returns a Sample or None.
    """

    def __init__(self, read, labeller, *, interval, stop_event, before=None, shown=None):
        self.read, self.labeller, self.interval = read, labeller, float(interval)
        self.before, self.shown = before, shown
        self.stop_event = stop_event
        self.failing = False
        self.failures = 0
        self.captured = 0
        self._queue = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def get(self, timeout=0.0):
        try:
            return self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _loop(self):
        backoff = FIRST_BACKOFF
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                if self.before is not None:
                    self.before()
                x = self.read()
                label = self.labeller()
            except Exception as error:   # noqa: BLE001 - a failing part must not end capturing for good
                self.failures += 1
                if not self.failing or self.failures % 10 == 0:
                    # Our own errors are one line; anything else is unexpected: keep its traceback.
                    _log.warning("capture failed (%d in a row): %s; retrying in %.0f s", self.failures, error,
                                 backoff, exc_info=not isinstance(error, PiBackpropError))
                self.failing = True
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if self.failing:
                _log.info("capture works again after %d failures", self.failures)
            self.failing, self.failures, backoff = False, 0, FIRST_BACKOFF
            sample = Sample(x, label, time.time(), self.shown() if self.shown else None)
            self.captured += 1
            try:
                self._queue.put_nowait(sample)
            except queue.Full:
                _log.debug("service loop is behind: a sample was dropped")
            self._wait_until(started)

    def _wait_until(self, started):
        """Wait out the interval since ``started``; a stop ends it at once, and a new
        ``interval`` (SIGHUP) takes effect within ``RECHECK`` seconds, not after an hour."""
        while not self.stop_event.is_set():
            remaining = started + self.interval - time.monotonic()
            if remaining <= 0:
                return
            self.stop_event.wait(min(remaining, RECHECK))

    def join(self, timeout=1.0):
        if self._thread.is_alive():
            self._thread.join(timeout)


def open_source(config, definition, stack, *, simulate, stop_event=None, live=None):
    """Open the configured source on ``stack`` (an ExitStack).

    Returns ``(read, simulated_source_or_None)``: ``read()`` gives one model input,
    float32 ``definition.input_shape``, and puts it (with the camera's frame, R, G, B) into
    ``live`` (a ``live.LiveView``) when one is given. Simulation is forced with
    ``simulate``. A sensor window's waits end early once ``stop_event`` is set (a slow rate
    must not delay a stop).
    """
    read, camera, simulated = _open_source(config, definition, stack, simulate=simulate, stop_event=stop_event)
    if live is None:
        return read, simulated
    if camera is None:
        def read_and_show():
            x = read()
            live.put(time.time(), x)
            return x
        return read_and_show, simulated
    from ..hardware.preprocess import frame_to_input

    def capture_and_show():
        frame = camera.capture()
        x = frame_to_input(frame, definition.input_shape, channel_order=camera.channel_order)
        live.put(time.time(), x, frame[:, :, ::-1] if camera.channel_order == "BGR" else frame)
        return x
    return capture_and_show, simulated


def _open_source(config, definition, stack, *, simulate, stop_event=None):
    """``(read, camera or None, simulated source or None)``: see ``open_source``."""
    kind = config.source.kind
    if simulate:
        kind = kind if kind.startswith("simulated-") else f"simulated-{kind}"
    shape, seed = definition.input_shape, config.model.seed
    if kind.endswith("camera"):
        if len(shape) != 3:
            raise ConfigError(f"source.kind {config.source.kind!r} gives images, but model "
                                  f"{definition.name!r} takes vectors of shape {shape}; use a sensor source")
        if kind == "simulated-camera":
            from ..hardware.simulated import SimulatedCamera
            camera = stack.enter_context(SimulatedCamera(seed, tuple(config.source.camera_resolution),
                                                         class_names=definition.classes))
        else:
            from ..hardware.camera import PiCamera
            from ..hardware.pins import pi_model
            try:
                camera = stack.enter_context(PiCamera(resolution=tuple(config.source.camera_resolution)))
            except HardwareError as error:
                if pi_model() is not None:
                    raise
                raise HardwareError(f"{error} (this is not a Raspberry Pi: use --simulate, or "
                                    'source.kind = "simulated-camera")') from None
        return (lambda: camera.capture_input(shape)), camera, (camera if kind == "simulated-camera" else None)
    if len(shape) != 1:
        raise ConfigError(f"source.kind {config.source.kind!r} gives vectors, but model "
                              f"{definition.name!r} takes images of shape {shape}; use a camera source")
    from ..hardware.sensors import SensorSource, open_adc_channel

    channels = config.source.sensor_channels
    window = config.source.window or shape[0] // len(channels)
    if window * len(channels) != shape[0]:
        raise ConfigError(f"source.window {window} x {len(channels)} channels gives {window * len(channels)} "
                              f"readings, but model {definition.name!r} takes {shape[0]}")
    simulated = None
    if kind == "simulated-sensor":
        from ..hardware.simulated import SimulatedSensor
        simulated = SimulatedSensor(seed, class_names=definition.classes)
        devices = [simulated]
        # The simulation has no hardware clock to wait for: read a window at once.
        rate = 1e6
    else:
        from ..hardware.pins import pi_model
        if pi_model() is None and os.environ.get("GPIOZERO_PIN_FACTORY", "").lower() != "mock":
            # gpiozero would quietly read its mock pins here: numbers that mean nothing.
            raise HardwareError("source.kind \"sensor\" reads an ADC on a Raspberry Pi's SPI pins; this is not "
                                'a Raspberry Pi: use --simulate, or source.kind = "simulated-sensor"')
        devices = [open_adc_channel(config.source.sensor_device.lower(), channel,
                                    device=config.source.sensor_spi_device) for channel in channels]
        rate = config.source.sensor_rate
    sleep = None if stop_event is None else stop_event.wait
    sensor = stack.enter_context(SensorSource(devices, window=window, rate=rate, sleep=sleep))
    return sensor.read_window, None, simulated


def check_pins_for_classes(config, definition):
    """Per-class pin lists must have one entry per class of the model."""
    for key in ("labels.pins", "lights.class_pins"):
        pins = config[key]
        if pins and len(pins) != len(definition.classes):
            raise ConfigError(f"{key} has {len(pins)} pins but model {definition.name!r} has "
                                f"{len(definition.classes)} classes ({', '.join(definition.classes)}); "
                                "give one pin per class, -1 for none")
