"""Status lights: what the service is doing, shown on one LED, separate LEDs or an RGB LED.

``PATTERNS`` is the one table of states and their patterns; the README's LED table is
generated from it (``pattern_table()``). One background thread plays the current pattern
on whichever LEDs are wired, so the three wirings share one code path, and a checkpoint
flash can return to the pattern that was playing before it.
"""

import dataclasses
import logging
import math
import threading

from ..exc import ConfigError
from .device import Device
from .pins import open_device
from .pins import pin_factory as default_pin_factory

_log = logging.getLogger(__name__)

COLOUR_NAMES = ("red", "green", "blue")
RED, GREEN, BLUE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
YELLOW, WHITE, OFF = (1.0, 0.6, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
PULSE_STEPS_PER_SECOND = 25   # brightness updates while pulsing; gpiozero's pulse uses the same


@dataclasses.dataclass(frozen=True)
class Pattern:
    """How a state looks. Times in seconds.

    kind   : "on", "off", "blink" (on_time lit, off_time dark), "pulse" (fade up and down
             over fade_time each), "flash" (dark off_time, lit on_time, dark off_time, then
             back to the previous state)
    colour : (red, green, blue) in [0, 1]; a single LED ignores it
    """

    kind: str
    colour: tuple
    meaning: str
    on_time: float = 0.0
    off_time: float = 0.0
    fade_time: float = 0.0

    def describe(self) -> str:
        colour = _colour_name(self.colour)
        if self.kind == "on":
            return f"{colour}, steady"
        if self.kind == "off":
            return "off"
        if self.kind == "pulse":
            return f"{colour}, slow pulse ({2 * self.fade_time:g} s per breath)"
        if self.kind == "flash":
            return f"{colour}, one short flash ({self.on_time:g} s)"
        period = self.on_time + self.off_time
        if self.on_time < self.off_time / 4:
            return f"{colour}, heartbeat blip every {period:g} s"
        return f"{colour}, blinking {1 / period:g} Hz"


PATTERNS = {
    "starting": Pattern("on", YELLOW, "starting: loading the config, resuming the checkpoint, compiling kernels"),
    "collecting": Pattern("pulse", BLUE, "collecting samples; not enough labelled ones to train yet", fade_time=1.0),
    "training": Pattern("blink", GREEN, "training", on_time=0.5, off_time=0.5),
    "checkpoint": Pattern("flash", WHITE, "a checkpoint was just saved", on_time=0.15, off_time=0.1),
    "idle": Pattern("blink", GREEN, "running, nothing to train: predicting only", on_time=0.1, off_time=1.9),
    "error": Pattern("blink", RED, "a part is failing (camera, sensor, disk, diverged training): see the journal",
                     on_time=0.1, off_time=0.1),
    "off": Pattern("off", OFF, "stopped"),
}
STATES = tuple(PATTERNS)


def _colour_name(colour) -> str:
    names = {RED: "red", GREEN: "green", BLUE: "blue", YELLOW: "yellow", WHITE: "white", OFF: "off"}
    return names.get(tuple(colour), "rgb(%g, %g, %g)" % tuple(colour))


def pattern_table() -> str:
    """The states as a Markdown table (for the README): state, pattern, meaning."""
    rows = ["| state | LED pattern | meaning |", "|---|---|---|"]
    rows += [f"| {name} | {p.describe()} | {p.meaning} |" for name, p in PATTERNS.items() if name != "off"]
    return "\n".join(rows)


def _steps(pattern, pwm: bool):
    """The pattern as an endless (or, for a flash, finite) run of (brightness, seconds)."""
    if pattern.kind in ("on", "off"):
        yield (1.0 if pattern.kind == "on" else 0.0), math.inf
    elif pattern.kind == "flash":
        yield 0.0, pattern.off_time
        yield 1.0, pattern.on_time
        yield 0.0, pattern.off_time
    elif pattern.kind == "blink":
        while True:
            yield 1.0, pattern.on_time
            yield 0.0, pattern.off_time
    elif pattern.kind == "pulse":
        if not pwm:  # an on/off LED cannot fade: a slow blink instead
            while True:
                yield 1.0, pattern.fade_time
                yield 0.0, pattern.fade_time
        steps = max(2, round(pattern.fade_time * PULSE_STEPS_PER_SECOND))
        ramp = [i / steps for i in range(steps + 1)]
        while True:
            for value in ramp[:-1] + ramp[::-1][:-1]:
                yield value, pattern.fade_time / steps
    else:
        raise AssertionError(pattern.kind)


class StatusLights(Device):
    """Shows the service's state on LEDs, and tells a terminal about each change.

    Give at most one wiring (all keyword-only; pins as gpiozero names: 17, "GPIO17", "BOARD11"):
    led          : one LED's pin; the states differ by timing (steady, pulse, blink rates)
    leds         : separate LEDs, {"red": pin, "green": pin, "blue": pin} (any of them); a
                   state lights the LEDs of its colour, or all of them if none matches
    rgb          : (red_pin, green_pin, blue_pin) of one RGB LED
    none of them : no LEDs; only ``on_change``/``describe()`` (a desktop terminal)
    class_leds   : optional pins, one per class (None for a class without an LED), lit by
                   ``show_prediction``
    active_high  : False for LEDs wired between the pin and 3.3 V
    on_change    : callable(state, description) called on each change, from the caller's
                   thread or, when a flash ends, from the pattern thread
    pin_factory  : a gpiozero pin factory; default ``pins.pin_factory()``
    time_scale   : multiplies every pattern time (tests and demos speed patterns up)

    ``set_state(name)`` with a name from ``STATES``; ``flash_checkpoint()``; ``state``;
    ``describe()``; ``close()`` (idempotent; turns the LEDs off). A context manager.
    """

    device_name, device_plural = "status LEDs", True

    def __init__(self, *, led=None, leds=None, rgb=None, class_leds=(), active_high=True,
                 on_change=None, pin_factory=None, time_scale=1.0):
        wirings = [name for name, value in (("led", led), ("leds", leds), ("rgb", rgb)) if value is not None]
        if len(wirings) > 1:
            raise ConfigError(f"status LEDs: give one of led, leds or rgb, not {' and '.join(wirings)}")
        if leds is not None:
            unknown = sorted(set(leds) - set(COLOUR_NAMES))
            if unknown or not leds:
                raise ConfigError(f"status LEDs: leds must map colours ({', '.join(COLOUR_NAMES)}) to pins, "
                                  f"got {dict(leds)!r}")
        if rgb is not None and len(tuple(rgb)) != 3:
            raise ConfigError(f"status LEDs: rgb needs three pins (red, green, blue), got {rgb!r}")
        if not (time_scale > 0):
            raise ConfigError(f"status LEDs: time_scale must be > 0, got {time_scale!r}")
        self.on_change = on_change
        self.time_scale = float(time_scale)
        self._devices = []        # everything to close
        self._outputs = []        # (device, colour index or None for brightness only, is_pwm)
        self._rgb = None
        self._class_leds = []
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = False
        self._state = None
        self._resume_state = None
        try:
            needs_pins = wirings or any(pin is not None for pin in class_leds)
            factory = (pin_factory or default_pin_factory()) if needs_pins else None
            if led is not None:
                self._add_output(factory, led, None, active_high, "status LED")
            elif leds is not None:
                for colour, pin in leds.items():
                    self._add_output(factory, pin, COLOUR_NAMES.index(colour), active_high, f"status LED {colour}")
            elif rgb is not None:
                from gpiozero import RGBLED
                red, green, blue = rgb
                self._rgb = open_device(lambda: RGBLED(red, green, blue, active_high=active_high,
                                                       pin_factory=factory), "status RGB LED", tuple(rgb))
                self._devices.append(self._rgb)
            for index, pin in enumerate(class_leds):
                device = None
                if pin is not None:
                    from gpiozero import LED
                    device = open_device(lambda: LED(pin, active_high=active_high, pin_factory=factory),
                                         f"class LED {index}", pin)
                    self._devices.append(device)
                self._class_leds.append(device)
        except BaseException:
            self._close_devices()
            raise
        self._thread = threading.Thread(target=self._play, name="status-lights", daemon=True)
        self._thread.start()

    def _add_output(self, factory, pin, colour_index, active_high, what):
        from gpiozero import LED, PWMLED
        from gpiozero.exc import PinPWMUnsupported

        def make():
            try:
                return PWMLED(pin, active_high=active_high, pin_factory=factory), True
            except PinPWMUnsupported:  # pins without PWM: on/off only, a pulse becomes a slow blink
                return LED(pin, active_high=active_high, pin_factory=factory), False

        device, pwm = open_device(make, what, pin)
        self._devices.append(device)
        self._outputs.append((device, colour_index, pwm))

    # -- public ---------------------------------------------------------------------------------

    @property
    def state(self):
        """The current state's name (None before the first ``set_state``)."""
        return self._state

    def describe(self) -> str:
        """One line for a terminal: "training: green, blinking 1 Hz"."""
        if self._state is None:
            return "status LEDs: not set"
        return f"{self._state}: {PATTERNS[self._state].describe()}"

    def set_state(self, state: str) -> None:
        """Play ``state``'s pattern from now on (``"checkpoint"`` flashes, then resumes)."""
        if state not in PATTERNS:
            raise ConfigError(f"unknown status LED state {state!r}; known: {', '.join(STATES)}")
        with self._lock:
            self._ensure_open()
            if PATTERNS[state].kind == "flash":
                if self._state is not None and PATTERNS[self._state].kind != "flash":
                    self._resume_state = self._state
            elif state == self._state:
                return
            self._state = state
            self._changed.set()
        self._notify()

    def flash_checkpoint(self) -> None:
        """The short "checkpoint saved" flash, then back to the state before it."""
        self.set_state("checkpoint")

    def show_prediction(self, index) -> None:
        """Light the class LED of class ``index`` only; ``None`` turns them all off."""
        with self._lock:   # not while close() releases the pins
            self._ensure_open()
            for position, device in enumerate(self._class_leds):
                if device is not None:
                    device.value = position == index

    def _release(self) -> None:
        """Stop the pattern, turn every LED off and release the pins."""
        with self._lock:
            self._stopping = True
            self._changed.set()
        self._thread.join(timeout=5)
        with self._lock:
            self._apply(0.0, OFF)
            self._close_devices()

    def __repr__(self):
        wiring = "rgb" if self._rgb else f"{len(self._outputs)} LED(s)" if self._outputs else "no LEDs"
        return f"StatusLights({wiring}, state={self._state!r})"

    # -- the pattern thread ---------------------------------------------------------------------

    def _notify(self):
        if self.on_change is not None:
            try:
                self.on_change(self._state, self.describe())
            except Exception:  # a display problem must not stop the lights
                _log.exception("status LED on_change callback failed")

    def _play(self):
        pwm = self._rgb is not None or all(is_pwm for _, _, is_pwm in self._outputs)
        while True:
            self._changed.wait()
            with self._lock:
                if self._stopping:
                    return
                self._changed.clear()
                state = self._state
            pattern = PATTERNS[state]
            interrupted = False
            for value, seconds in _steps(pattern, pwm):
                self._apply(value, pattern.colour)
                if self._changed.wait(None if math.isinf(seconds) else seconds * self.time_scale):
                    interrupted = True
                    break
            if not interrupted and pattern.kind == "flash":
                with self._lock:
                    if self._state == state and not self._stopping:
                        self._state = self._resume_state or "idle"
                        self._changed.set()
                        resumed = True
                    else:
                        resumed = False
                if resumed:
                    self._notify()

    def _apply(self, brightness, colour):
        try:
            if self._rgb is not None:
                self._rgb.value = tuple(brightness * c for c in colour)
            lit = [index for _, index, _ in self._outputs if index is not None and colour[index] > 0]
            for device, index, pwm in self._outputs:
                if index is None:
                    level = brightness
                elif lit:
                    level = brightness * colour[index] if index in lit else 0.0
                else:  # no LED of this colour is wired: use them all, the timing tells
                    level = brightness
                device.value = level if pwm else level >= 0.5
        except Exception:
            if not self.closed:
                _log.exception("status LEDs could not be set")

    def _close_devices(self):
        for device in reversed(self._devices):
            try:
                device.close()
            except Exception:
                _log.debug("closing %r failed", device, exc_info=True)
        self._devices.clear()
