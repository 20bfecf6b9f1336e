"""Label buttons on gpiozero's mock pins: presses label the next samples."""

import pytest

from pi_backprop.exc import ConfigError, HardwareError
from pi_backprop.hardware.buttons import LabelButtons

gpiozero = pytest.importorskip("gpiozero")

NAMES = ["empty", "circle", "square"]


def test_hold_mode_labels_samples_while_a_button_is_held(factory):
    with LabelButtons([5, 6, 13], class_names=NAMES, mode="hold", bounce_time=None, pin_factory=factory) as buttons:
        labels = [buttons.take_label()]
        factory.pin(6).drive_low()            # press "circle" (buttons pull to ground)
        labels += [buttons.take_label(), buttons.take_label()]
        assert buttons.describe() == "held: circle"
        factory.pin(6).drive_high()           # release
        labels.append(buttons.take_label())
        factory.pin(5).drive_low()
        factory.pin(13).drive_low()           # two at once: ambiguous
        labels.append(buttons.take_label())
        factory.pin(5).drive_high()
        labels.append(buttons.take_label())
        factory.pin(13).drive_high()   # (gpiozero's hold thread makes closing a held button slow)
    assert labels == [None, 1, 1, None, None, 2]
    assert buttons.presses == [1, 0, 2]


def test_press_mode_labels_only_the_next_sample(factory):
    seen = []
    with LabelButtons(["GPIO5", "GPIO6", None], mode="press", bounce_time=None, pin_factory=factory,
                      on_press=seen.append) as buttons:
        pin = factory.pin(6)
        pin.drive_low()
        pin.drive_high()
        assert buttons.describe() == "next sample: class 1"
        assert [buttons.take_label(), buttons.take_label()] == [1, None]
        factory.pin(5).drive_low()
        factory.pin(5).drive_high()
        pin.drive_low()                       # a later press wins
        pin.drive_high()
        assert buttons.take_label() == 1
    assert seen == [1, 0, 1]


def test_buttons_can_use_board_pin_names(factory):
    with LabelButtons(["BOARD29", "BOARD31"], mode="hold", pin_factory=factory) as buttons:
        factory.pin(6).drive_low()            # BOARD31 is GPIO6
        assert buttons.take_label() == 1
        factory.pin(6).drive_high()


def test_pin_in_use_and_invalid_pin_are_one_line_errors(factory):
    with LabelButtons([5], pin_factory=factory):
        with pytest.raises(HardwareError, match=r"label button for 'square': pin 5 is already in use"):
            LabelButtons([6, 7, 5], class_names=NAMES, pin_factory=factory)
    # 6 and 7 were opened before the failure and are free again.
    with LabelButtons([6, 7], pin_factory=factory):
        pass
    with pytest.raises(HardwareError, match=r"'GPIO77' is not a usable pin.*'BOARD11'"):
        LabelButtons(["GPIO77"], pin_factory=factory)


@pytest.mark.parametrize("kwargs, message", [
    ({"pins": [5], "mode": "toggle"}, "mode must be one of hold, press"),
    ({"pins": []}, "at least one pin"),
    ({"pins": [5, 6], "class_names": ["a"]}, "2 pins for 1 classes"),
    ({"pins": [5], "bounce_time": 5}, "bounce_time must be 0..1 seconds"),
])
def test_bad_button_config_is_a_config_error(factory, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LabelButtons(pin_factory=factory, **kwargs)


def test_close_is_idempotent_and_stops_labelling(factory):
    buttons = LabelButtons([5], mode="hold", pin_factory=factory)
    factory.pin(5).drive_low()
    buttons.close()
    buttons.close()
    assert buttons.take_label() is None
