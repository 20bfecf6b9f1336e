"""Every device shares one lifecycle (hardware/device.py): ``with`` closes it, ``close()`` is
idempotent, ``closed`` tells, and a use after close raises ``DeviceClosed``, one error for all."""

import inspect

import pytest
from test_hardware_camera import fake_module

from pi_backprop import hardware
from pi_backprop.exc import DeviceClosed, HardwareError
from pi_backprop.hardware.device import Device
from pi_backprop.hardware.simulated import SimulatedCamera, SimulatedSensor


def _sensor_source():
    from pi_backprop.hardware.sensors import SensorSource
    return SensorSource([SimulatedSensor(seed=0)], window=4, rate=1e6)


def _status_lights(factory):
    from pi_backprop.hardware.leds import StatusLights
    return StatusLights(led=17, class_leds=[22], pin_factory=factory, time_scale=0.01)


def _label_buttons(factory):
    from pi_backprop.hardware.buttons import LabelButtons
    return LabelButtons([5], mode="hold", pin_factory=factory)


def _pi_camera():
    import numpy as np

    from pi_backprop.hardware.camera import PiCamera
    camera = PiCamera(picamera2_module=fake_module())
    camera._camera.frame = np.zeros((240, 320, 3), np.uint8)  # what the fake camera shows
    return camera


# (how to open it, what a use is, the name in the message)
DEVICES = {
    "simulated camera": (lambda factory: SimulatedCamera(seed=0), lambda d: d.capture(), "simulated camera"),
    "simulated sensor": (lambda factory: SimulatedSensor(seed=0), lambda d: d.value, "simulated sensor"),
    "sensor source": (lambda factory: _sensor_source(), lambda d: d.read_window(), "sensor source"),
    "camera": (lambda factory: _pi_camera(), lambda d: d.capture(), "camera"),
    "status LEDs": (_status_lights, lambda d: d.set_state("training"), "status LEDs"),
    "class LEDs": (_status_lights, lambda d: d.show_prediction(0), "status LEDs"),
}


@pytest.mark.parametrize("kind", DEVICES)
def test_use_after_close_raises_device_closed(kind, request):
    open_device, use, name = DEVICES[kind]
    factory = request.getfixturevalue("factory") if "LED" in kind else None
    with open_device(factory) as device:
        assert isinstance(device, Device) and not device.closed
        use(device)  # works while open
    assert device.closed
    device.close()  # idempotent
    assert device.closed
    verb = "are" if name == "status LEDs" else "is"
    with pytest.raises(DeviceClosed, match=f"^the {name} {verb} closed$") as raised:
        use(device)
    assert isinstance(raised.value, HardwareError)  # `except HardwareError` still catches it


def test_closed_label_buttons_label_nothing(factory):
    """The one use that does not raise: a closed set of buttons is as if none were held."""
    with _label_buttons(factory) as buttons:
        factory.pin(5).drive_low()
        assert buttons.take_label() == 0
    assert buttons.closed and buttons.take_label() is None


def test_every_device_class_has_the_shared_lifecycle():
    import importlib
    import pkgutil
    found = []
    for info in pkgutil.iter_modules(hardware.__path__, "pi_backprop.hardware."):
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hasattr(cls, "close") and cls is not Device:
                found.append(name)
                assert issubclass(cls, Device), name
                assert "__enter__" not in vars(cls) and "__exit__" not in vars(cls), name
    assert {"PiCamera", "SensorSource", "StatusLights", "LabelButtons", "SimulatedCamera",
            "SimulatedSensor"} <= set(found)


def test_two_threads_closing_at_once_release_once():
    import threading

    released, gate = [], threading.Barrier(8)

    class Slow(Device):
        def _release(self):
            released.append(threading.current_thread().name)

    device = Slow()

    def close():
        gate.wait()
        device.close()
    threads = [threading.Thread(target=close) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(released) == 1 and device.closed

