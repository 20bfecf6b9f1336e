"""PiCamera driven by a fake picamera2 module: configuration, copying, colour order, errors."""

import types

import numpy as np
import pytest

from pi_backprop.exc import ConfigError, HardwareError
from pi_backprop.hardware import camera as camera_module
from pi_backprop.hardware.camera import PiCamera, camera_status


class FakePicamera2:
    """Records what PiCamera does to it, like picamera2.Picamera2 (same method names)."""

    cameras = [{"Model": "imx708", "Num": 0, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]
    open_error = None
    instances = []

    def __init__(self, camera_num=0):
        if self.open_error is not None:
            raise self.open_error
        self.camera_num = camera_num
        self.calls = []
        self.frame = None
        self.instances.append(self)

    @classmethod
    def global_camera_info(cls):
        return cls.cameras

    def create_preview_configuration(self, main={}, lores=None, buffer_count=4, **kwargs):
        self.calls.append("create_preview_configuration")
        return {"use_case": "preview", "main": dict(main), "lores": lores, "buffer_count": buffer_count}

    def configure(self, config):
        self.calls.append("configure")
        self.configured = config

    def start(self):
        self.calls.append("start")

    def capture_array(self, name="main"):
        self.calls.append(f"capture_array {name}")
        return self.frame

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


def fake_module(**attributes):
    cls = type("Picamera2", (FakePicamera2,), {"instances": [], **attributes})
    return types.SimpleNamespace(Picamera2=cls)


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_camera_is_configured_with_a_small_bgr_main_stream():
    module = fake_module()
    with PiCamera(resolution=(320, 240), picamera2_module=module) as camera:
        fake = module.Picamera2.instances[0]
        assert fake.configured["main"] == {"size": (320, 240), "format": "RGB888"}
        assert fake.configured["lores"] is None and fake.configured["buffer_count"] == 2
        assert fake.calls == ["create_preview_configuration", "configure", "start"]
        assert camera.channel_order == "BGR"
    assert fake.calls[-2:] == ["stop", "close"]


def test_capture_copies_the_frame_out_of_the_buffer_and_drops_padding():
    module = fake_module()
    buffer = np.zeros((240, 320, 4), np.uint8)   # XRGB8888-style padding channel
    buffer[..., 0], buffer[..., 1], buffer[..., 2], buffer[..., 3] = 10, 20, 30, 255
    with PiCamera(picamera2_module=module) as camera:
        module.Picamera2.instances[0].frame = buffer
        frame = camera.capture()
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
        assert not np.shares_memory(frame, buffer)
        buffer[...] = 0                             # the camera reuses its buffer
        assert frame[0, 0].tolist() == [10, 20, 30]


def test_capture_input_turns_bgr_memory_into_rgb_channels():
    module = fake_module()
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[..., 2] = 255                             # "RGB888" is B, G, R in memory: pure red
    with PiCamera(picamera2_module=module) as camera:
        module.Picamera2.instances[0].frame = frame
        colour = camera.capture_input((3, 24, 24))
        grey = camera.capture_input((1, 24, 24))
    np.testing.assert_allclose(colour[:, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(grey, 0.299, atol=1e-6)


def test_captures_are_spaced_by_the_interval():
    clock = FakeClock()
    module = fake_module()
    with PiCamera(interval=2.0, picamera2_module=module, clock=clock, sleep=clock.sleep) as camera:
        module.Picamera2.instances[0].frame = np.zeros((240, 320, 3), np.uint8)
        for _ in range(3):
            camera.capture()
            clock.now += 0.5                        # time spent on training in between
    assert clock.sleeps == pytest.approx([1.5, 1.5])


@pytest.mark.parametrize("error, message", [
    (RuntimeError("Camera __init__ sequence did not complete."), "could not be opened"),
    (RuntimeError("Failed to acquire camera: Device or resource busy"), "in use by another process"),
    (IndexError("list index out of range"), "no camera 0 is connected"),
])
def test_open_failures_are_one_line(error, message):
    module = fake_module(open_error=error)
    with pytest.raises(HardwareError, match=message) as info:
        PiCamera(picamera2_module=module)
    assert "\n" not in str(info.value)


def test_busy_is_recognised_through_picamera2s_wrapping():
    try:
        try:
            raise RuntimeError("camera.acquire() returned unexpected code: -16")
        except RuntimeError as inner:
            raise RuntimeError("Camera __init__ sequence did not complete.") from inner
    except RuntimeError as wrapped:
        error = wrapped
    with pytest.raises(HardwareError, match="in use by another process"):
        PiCamera(picamera2_module=fake_module(open_error=error))


def test_no_camera_listed_is_not_connected():
    with pytest.raises(HardwareError, match=r"no camera 0 is connected \(0 found\): check the ribbon cable"):
        PiCamera(picamera2_module=fake_module(cameras=[]))
    assert camera_status(picamera2_module=fake_module(cameras=[])) == "no camera connected"
    assert camera_status(picamera2_module=fake_module()) == "camera 0: imx708"


def test_missing_picamera2_names_apt_and_system_site_packages(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "picamera2", None)   # import fails
    with pytest.raises(HardwareError) as info:
        PiCamera()
    message = str(info.value)
    assert "sudo apt install python3-picamera2" in message and "--system-site-packages" in message
    assert "\n" not in message
    assert camera_status().startswith("not available: picamera2 is not available")


def test_failed_frame_and_bad_frame_are_hardware_errors():
    module = fake_module()
    with PiCamera(picamera2_module=module) as camera:
        fake = module.Picamera2.instances[0]
        fake.capture_array = lambda name="main": (_ for _ in ()).throw(RuntimeError("timeout"))
        with pytest.raises(HardwareError, match="camera frame failed: timeout"):
            camera.capture()
        fake.capture_array = lambda name="main": np.zeros((240, 320), np.float32)
        with pytest.raises(HardwareError, match="unexpected frame"):
            camera.capture()
    with pytest.raises(HardwareError, match="closed"):
        camera.capture()
    camera.close()   # idempotent


def test_start_failure_closes_the_camera_and_bad_resolution_is_config_error():
    module = fake_module(start=lambda self: (_ for _ in ()).throw(RuntimeError("Configuration failed")))
    with pytest.raises(HardwareError, match="could not be started at 320x240: Configuration failed"):
        PiCamera(picamera2_module=module)
    assert module.Picamera2.instances[0].calls[-1] == "close"
    with pytest.raises(ConfigError, match="even, at least 16"):
        PiCamera(resolution=(321, 240), picamera2_module=fake_module())


def test_camera_module_imports_no_picamera2_at_import_time():
    assert "picamera2" not in vars(camera_module)
