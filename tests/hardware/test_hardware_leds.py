"""Status LED patterns, asserted on gpiozero's mock pins (state history, not timings)."""

import time

import pytest

from pi_backprop.exc import ConfigError, HardwareError
from pi_backprop.hardware import leds as leds_module
from pi_backprop.hardware.leds import PATTERNS, STATES, StatusLights, pattern_table

gpiozero = pytest.importorskip("gpiozero")
from gpiozero.pins.mock import MockFactory  # noqa: E402

FAST = 0.01   # every pattern time x 0.01: a 1 Hz blink toggles every 5 ms


def history(pin):
    return [round(float(s.state), 3) for s in pin.states]


def wait_for(predicate, timeout=5.0):
    """Poll until ``predicate()`` holds; generous timeout, so the test never depends on speed."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.002)
    return predicate()


def test_every_state_has_a_distinct_pattern_and_a_readme_row():
    seen = {(p.kind, p.colour, p.on_time, p.off_time, p.fade_time) for p in PATTERNS.values()}
    assert len(seen) == len(PATTERNS)
    assert {"starting", "collecting", "training", "checkpoint", "idle", "error"} <= set(STATES)
    table = pattern_table()
    for state in STATES:
        if state != "off":
            assert f"| {state} | {PATTERNS[state].describe()} |" in table
    # A single LED has no colour: the timings alone must tell the states apart.
    timings = {(p.kind, p.on_time, p.off_time, p.fade_time) for p in PATTERNS.values()}
    assert len(timings) == len(PATTERNS)


def test_steady_state_drives_the_pin_on(factory):
    with StatusLights(led=17, pin_factory=factory, time_scale=FAST) as lights:
        lights.set_state("starting")
        pin = factory.pin(17)
        assert wait_for(lambda: pin.state == 1.0)
        assert set(history(pin)) == {0.0, 1.0}   # full on, no fading on the way
    assert pin.state == 0.0   # off after close


@pytest.mark.parametrize("state", ["training", "error", "idle"])
def test_blinking_states_alternate_full_on_and_off(factory, state):
    with StatusLights(led="GPIO17", pin_factory=factory, time_scale=FAST) as lights:
        lights.set_state(state)
        pin = factory.pin(17)
        assert wait_for(lambda: len(pin.states) >= 7)
        values = history(pin)[1:7]
    assert values == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_collecting_pulses_through_intermediate_brightness(factory):
    with StatusLights(led=17, pin_factory=factory, time_scale=FAST) as lights:
        lights.set_state("collecting")
        pin = factory.pin(17)
        assert wait_for(lambda: len(pin.states) >= 60)
        values = history(pin)[1:60]
    assert any(0.2 < v < 0.8 for v in values)
    rising = values[:values.index(max(values)) + 1]
    assert rising == sorted(rising) and max(values) == 1.0


def test_pulse_becomes_slow_blink_on_pins_without_pwm():
    factory = MockFactory()   # plain MockPin: no PWM
    try:
        with StatusLights(led=17, pin_factory=factory, time_scale=FAST) as lights:
            lights.set_state("collecting")
            pin = factory.pin(17)
            assert wait_for(lambda: len(pin.states) >= 5)
            assert [bool(s.state) for s in pin.states[1:5]] == [True, False, True, False]
    finally:
        factory.close()


def test_checkpoint_flash_returns_to_previous_state_and_reports_changes(factory):
    changes = []
    with StatusLights(led=17, pin_factory=factory, time_scale=FAST,
                      on_change=lambda state, text: changes.append((state, text))) as lights:
        lights.set_state("starting")
        pin = factory.pin(17)
        assert wait_for(lambda: pin.state == 1.0)
        pin.clear_states()
        lights.flash_checkpoint()
        assert wait_for(lambda: lights.state == "starting")
        assert wait_for(lambda: pin.state == 1.0)
        # dark, the flash, dark, then steady again
        assert history(pin) == [1.0, 0.0, 1.0, 0.0, 1.0]
        assert lights.describe() == "starting: yellow, steady"
    assert [state for state, _ in changes] == ["starting", "checkpoint", "starting"]
    assert changes[1][1] == "checkpoint: white, one short flash (0.15 s)"


def test_rgb_led_shows_state_colours(factory):
    with StatusLights(rgb=(5, 6, 13), pin_factory=factory, time_scale=FAST) as lights:
        red, green, blue = (factory.pin(n) for n in (5, 6, 13))
        lights.set_state("error")
        assert wait_for(lambda: len(red.states) >= 4)
        assert history(red)[1:4] == [1.0, 0.0, 1.0]
        assert history(green) == [0.0] and history(blue) == [0.0]
        lights.set_state("starting")   # yellow: red full, green partly
        assert wait_for(lambda: green.state > 0)
        assert red.state == 1.0 and green.state == pytest.approx(0.6) and blue.state == 0.0


def test_separate_leds_light_their_colour_or_all_when_missing(factory):
    with StatusLights(leds={"red": 22, "green": 27}, pin_factory=factory, time_scale=FAST) as lights:
        red, green = factory.pin(22), factory.pin(27)
        lights.set_state("training")          # green only
        assert wait_for(lambda: len(green.states) >= 3)
        assert history(red) == [0.0]
        lights.set_state("collecting")        # blue: not wired, so both pulse
        assert wait_for(lambda: len(red.states) >= 10)
        assert any(0 < v < 1 for v in history(red))


def test_class_leds_show_one_prediction(factory):
    with StatusLights(class_leds=[23, None, 24], pin_factory=factory) as lights:
        lights.show_prediction(2)
        assert (factory.pin(23).state, factory.pin(24).state) == (False, True)
        lights.show_prediction(0)
        assert (factory.pin(23).state, factory.pin(24).state) == (True, False)
        lights.show_prediction(None)
        assert (factory.pin(23).state, factory.pin(24).state) == (False, False)


def test_terminal_only_lights_need_no_pins():
    changes = []
    with StatusLights(on_change=lambda state, text: changes.append(text)) as lights:
        lights.set_state("training")
        lights.set_state("training")   # no change, no report
        assert lights.describe() == "training: green, blinking 1 Hz"
    assert changes == ["training: green, blinking 1 Hz"]


def test_close_is_idempotent_and_releases_pins(factory):
    lights = StatusLights(led=17, pin_factory=factory)
    lights.set_state("training")
    lights.close()
    lights.close()
    with StatusLights(led=17, pin_factory=factory):   # the pin is free again
        pass


@pytest.mark.parametrize("kwargs, message", [
    ({"led": 17, "rgb": (1, 2, 3)}, "give one of led, leds or rgb"),
    ({"leds": {"purple": 4}}, "leds must map colours"),
    ({"rgb": (1, 2)}, "rgb needs three pins"),
])
def test_bad_wiring_is_a_config_error(factory, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        StatusLights(pin_factory=factory, **kwargs)


def test_unknown_state_and_pin_errors_are_one_line(factory):
    with StatusLights(led=17, pin_factory=factory) as lights:
        with pytest.raises(ConfigError, match="unknown status LED state 'busy'"):
            lights.set_state("busy")
        with pytest.raises(HardwareError, match="pin 17 is already in use"):
            StatusLights(led=17, pin_factory=factory)
    with pytest.raises(HardwareError, match="'GPIO99' is not a usable pin"):
        StatusLights(leds={"red": 22, "green": "GPIO99"}, pin_factory=factory)
    # The red LED opened before the failure was released again.
    with StatusLights(led=22, pin_factory=factory):
        pass


def test_pattern_module_table_is_the_only_source():
    # describe() derives from the table: change a time, the text follows.
    blink = leds_module.Pattern("blink", leds_module.GREEN, "x", on_time=0.25, off_time=0.25)
    assert blink.describe() == "green, blinking 2 Hz"
