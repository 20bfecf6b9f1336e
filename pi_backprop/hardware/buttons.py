"""Label buttons: one push button per class says what the camera or sensor is seeing.

Wire each button between its GPIO pin and ground (gpiozero's ``Button`` default: internal
pull-up, pressed = low).
"""

import logging
import threading

from ..exc import ConfigError
from .device import Device
from .pins import open_device
from .pins import pin_factory as default_pin_factory

_log = logging.getLogger(__name__)

MODES = ("hold", "press")
MAX_PRESSES_KEPT = 1000


class LabelButtons(Device):
    """One gpiozero ``Button`` per class; ``take_label()`` says which label a new sample gets.

    pins        : one pin per class, in class order (gpiozero names: 17, "GPIO17",
                  "BOARD11"); None for a class without a button
    class_names : optional names, for messages and ``describe()``; default "class 0", ...
    mode        : "hold": a sample gets the label of the button held while it is captured;
                  "press": the next sample after a press gets that label (once)
    bounce_time : seconds; contact bounce shorter than this is ignored
    pull_up     : True (default) for buttons to ground; False for buttons to 3.3 V
    pin_factory : a gpiozero pin factory; default ``pins.pin_factory()``
    on_press    : optional callable(class_index), called from gpiozero's thread on a press

    ``take_label() -> int | None``; ``held() -> list of class indices``; ``presses`` (class indices of the
    presses seen, the newest 500 to 1000); ``close()`` (idempotent). A context manager.
    """

    device_name, device_plural = "label buttons", True

    def __init__(self, pins, *, class_names=None, mode="hold", bounce_time=0.05, pull_up=True,
                 pin_factory=None, on_press=None):
        pins = list(pins)
        if mode not in MODES:
            raise ConfigError(f"label buttons: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not pins or all(pin is None for pin in pins):
            raise ConfigError("label buttons: give at least one pin")
        if class_names is not None and len(class_names) != len(pins):
            raise ConfigError(f"label buttons: {len(pins)} pins for {len(class_names)} classes; "
                              f"give one pin (or None) per class")
        if bounce_time is not None and not (0 <= float(bounce_time) <= 1):
            raise ConfigError(f"label buttons: bounce_time must be 0..1 seconds, got {bounce_time!r}")
        self.class_names = list(class_names) if class_names is not None else [f"class {i}" for i in range(len(pins))]
        self.mode = mode
        self.on_press = on_press
        self.presses = []
        self._pending = None
        self._lock = threading.Lock()
        self._buttons = []
        from gpiozero import Button

        factory = pin_factory or default_pin_factory()
        try:
            for index, pin in enumerate(pins):
                if pin is None:
                    self._buttons.append(None)
                    continue
                button = open_device(lambda: Button(pin, pull_up=pull_up, bounce_time=bounce_time,
                                                    pin_factory=factory),
                                     f"label button for {self.class_names[index]!r}", pin)
                button.when_pressed = lambda _device=None, index=index: self._pressed(index)
                self._buttons.append(button)
        except BaseException:
            self._release()
            raise

    def _pressed(self, index):
        # gpiozero 1.6 passes the device to a one-argument handler, 2.0 too; we ignore it.
        with self._lock:
            self.presses.append(index)
            if len(self.presses) > MAX_PRESSES_KEPT:   # a service runs for months
                del self.presses[:-MAX_PRESSES_KEPT // 2]
            self._pending = index
        _log.debug("label button %r pressed", self.class_names[index])
        if self.on_press is not None:
            try:
                self.on_press(index)
            except Exception:
                _log.exception("label button on_press callback failed")

    def held(self) -> list:
        """Indices of the classes whose buttons are held down now."""
        return [i for i, button in enumerate(self._buttons) if button is not None and button.is_pressed]

    def take_label(self):
        """The label for a sample captured now, or None (unlabelled).

        hold  : the held button's class; None if none or several are held (ambiguous)
        press : the class of the last press since the previous call, consumed by this call
        """
        if self.closed:  # labels nothing, as a button let go: never a reason to stop capturing
            return None
        if self.mode == "hold":
            held = self.held()
            if len(held) > 1:
                _log.warning("label buttons %s held together: sample left unlabelled",
                             ", ".join(repr(self.class_names[i]) for i in held))
            return held[0] if len(held) == 1 else None
        with self._lock:
            label, self._pending = self._pending, None
        return label

    def describe(self) -> str:
        """One line: which button is held or pending."""
        if self.mode == "hold":
            held = self.held()
            return "held: " + (", ".join(self.class_names[i] for i in held) if held else "none")
        pending = self._pending
        return "next sample: " + (self.class_names[pending] if pending is not None else "unlabelled")

    def _release(self) -> None:
        """Release the buttons' pins."""
        for button in self._buttons:
            if button is not None:
                try:
                    button.close()
                except Exception:
                    _log.debug("closing %r failed", button, exc_info=True)
        self._buttons = [None] * len(self._buttons)


    def __repr__(self):
        return f"LabelButtons({len(self._buttons)} classes, mode={self.mode!r})"
