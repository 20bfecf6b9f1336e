"""The Raspberry Pi camera through picamera2, reduced to what training needs: small frames.

picamera2 is imported only when a real camera is opened (it loads libcamera at import).
It comes from Raspberry Pi OS, not PyPI: ``sudo apt install python3-picamera2``, and a
venv made with ``--system-site-packages`` so the venv can see it.
"""

import logging

import numpy as np

from ..exc import ConfigError, HardwareError
from .device import Device
from .pacing import Pacer
from .preprocess import frame_to_input

_log = logging.getLogger(__name__)

INSTALL_HINT = ("sudo apt install python3-picamera2, and run pi-backprop from a venv made with "
                "python3 -m venv --system-site-packages")
# "RGB888" is picamera2's name for 24-bit pixels stored B, G, R in memory.
FRAME_FORMAT = "RGB888"


def import_picamera2():
    """The ``picamera2`` module, or a one-line ``HardwareError`` naming the fix."""
    try:
        import picamera2
    except ImportError as error:
        raise HardwareError(f"picamera2 is not available ({error}): {INSTALL_HINT}") from None
    return picamera2


def _chain_text(error) -> str:
    """Every message in an exception's cause chain, lower-cased: picamera2 wraps the real
    reason ("Device or resource busy") in "Camera __init__ sequence did not complete"."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " | ".join(parts).lower()


def _open_error(error, camera_num) -> HardwareError:
    text = _chain_text(error)
    if any(word in text for word in ("busy", "acquire", "-16", "in use")):
        return HardwareError(f"camera {camera_num} is in use by another process (rpicam-hello, libcamera-vid, "
                             f"another pi-backprop?); stop it and try again")
    if isinstance(error, IndexError) or "not found" in text or "no camera" in text:
        return HardwareError(f"no camera {camera_num} is connected: check the ribbon cable and that "
                             f"`rpicam-hello --list-cameras` lists it")
    return HardwareError(f"camera {camera_num} could not be opened: {error}")


def list_cameras(*, picamera2_module=None) -> list:
    """The attached cameras as picamera2 describes them (dicts with "Model", "Num", ...),
    without opening any. Raises ``HardwareError`` if picamera2 is missing."""
    module = picamera2_module or import_picamera2()
    try:
        return list(module.Picamera2.global_camera_info())
    except Exception as error:
        raise HardwareError(f"cannot list cameras: {error}") from None


def camera_status(*, picamera2_module=None) -> str:
    """One line for ``pi-backprop info``: the cameras found, or why there are none."""
    try:
        cameras = list_cameras(picamera2_module=picamera2_module)
    except HardwareError as error:
        return f"not available: {error}"
    if not cameras:
        return "no camera connected"
    return ", ".join(f"camera {c.get('Num', i)}: {c.get('Model', 'unknown')}" for i, c in enumerate(cameras))


class PiCamera(Device):
    """Frames from the Pi camera: uint8 (height, width, 3), B, G, R (``channel_order = "BGR"``).

    resolution       : (width, height) of the stream, pixels; small (320x240 default)
                       because the models are tiny and the ISP scales for free. The
                       ``main`` stream is used: on a Pi 4 and older the ``lores`` stream
                       can only be YUV.
    interval         : seconds between captures at least (0: as fast as frames come)
    camera_num       : which camera (0 unless there are two)
    buffer_count     : picamera2 buffers; 2 keeps memory small on a Pi Zero 2 W
    picamera2_module : the module to use instead of importing ``picamera2`` (tests)
    clock, sleep     : injectable time functions for the interval (tests)

    The camera is opened and started by the constructor, so a missing or busy camera is
    reported at start-up, as one line. ``capture()``, ``capture_input(input_shape)``,
    ``close()`` (idempotent). A context manager.
    """

    channel_order = "BGR"
    device_name = "camera"

    def __init__(self, *, resolution=(320, 240), interval=0.0, camera_num=0, buffer_count=2,
                 picamera2_module=None, clock=None, sleep=None):
        width, height = (int(d) for d in resolution)
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ConfigError(f"camera resolution must be (width, height), even, at least 16, got {resolution!r}")
        self.resolution = (width, height)
        self.camera_num = camera_num
        pacer_kwargs = {k: v for k, v in (("clock", clock), ("sleep", sleep)) if v is not None}
        self._pacer = Pacer(interval, **pacer_kwargs)
        self._camera = None
        self._started = False
        module = picamera2_module or import_picamera2()
        try:
            cameras = module.Picamera2.global_camera_info()
        except Exception as error:
            raise _open_error(error, camera_num) from None
        if len(cameras) <= camera_num:
            raise HardwareError(f"no camera {camera_num} is connected ({len(cameras)} found): check the ribbon "
                                f"cable and that `rpicam-hello --list-cameras` lists it")
        try:
            self._camera = module.Picamera2(camera_num)
        except Exception as error:
            raise _open_error(error, camera_num) from None
        try:
            self.config = self._camera.create_preview_configuration(
                main={"size": self.resolution, "format": FRAME_FORMAT}, buffer_count=buffer_count)
            self._camera.configure(self.config)
            self._camera.start()
            self._started = True
        except Exception as error:
            self.close()
            raise HardwareError(f"camera {camera_num} could not be started at {width}x{height}: {error}") from None
        _log.info("camera %d open: %dx%d %s", camera_num, width, height, FRAME_FORMAT)

    def capture(self) -> np.ndarray:
        """The next frame, waiting for the interval: uint8 (height, width, 3), B, G, R.

        The array is our own copy: picamera2's buffers go back to the camera.
        """
        self._ensure_open()
        self._pacer.wait()
        try:
            array = self._camera.capture_array("main")
        except Exception as error:
            raise HardwareError(f"camera frame failed: {error}") from None
        array = np.asarray(array)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
            raise HardwareError(f"camera gave an unexpected frame: {array.dtype} {array.shape}, "
                                f"expected uint8 (height, width, 3)")
        # Drop any padding channel; np.array copies, whatever picamera2 version we have.
        return np.array(array[:, :, :3], dtype=np.uint8, copy=True, order="C")

    def capture_input(self, input_shape) -> np.ndarray:
        """The next frame as a model input: float32 (C, H, W) in [0, 1], R, G, B."""
        return frame_to_input(self.capture(), input_shape, channel_order=self.channel_order)

    def _release(self) -> None:
        """Stop and release the camera."""
        camera, self._camera = self._camera, None
        if camera is None:
            return
        for step in ("stop", "close") if self._started else ("close",):
            try:
                getattr(camera, step)()
            except Exception:
                _log.debug("camera %s failed", step, exc_info=True)
        self._started = False

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"PiCamera(camera {self.camera_num}, {self.resolution[0]}x{self.resolution[1]}, {state})"
