
import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop.nn import backend as backend_module


def _numba_installed():
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


BACKEND_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("numba", id="numba",
                 marks=pytest.mark.skipif(not _numba_installed(), reason="numba is not installed")),
]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Run the test once per kernel backend; restore the previous one afterwards."""
    previous = backend_module.current
    pb.set_backend(request.param)
    yield request.param
    backend_module.current = previous


@pytest.fixture
def numpy_backend():
    """The numpy backend for one test; the previous choice is restored afterwards."""
    previous = backend_module.current
    pb.set_backend("numpy")
    yield
    backend_module.current = previous


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _restore_logging():
    """``cli.main()`` points the pi_backprop logger at the stderr of the moment (pytest's
    capture) and stops propagation; put it back so later tests' caplog sees records."""
    import logging

    logger = logging.getLogger("pi_backprop")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    logger.handlers[:], logger.propagate = [], True
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


@pytest.fixture
def factory():
    """A fresh gpiozero mock pin factory with PWM pins, as ``pins.mock_factory()`` makes for
    the desktop; closed after the test."""
    pytest.importorskip("gpiozero")
    from pi_backprop.hardware.pins import mock_factory

    factory = mock_factory()
    yield factory
    factory.close()


class SmallDisk:
    """A tmpfs of a few MB: a real file system that fills up. ``fill()`` takes what is left
    (ENOSPC from then on), ``free_up()`` gives it back."""

    def __init__(self, path):
        self.path = path
        self.filler = path / "filler"

    def fill(self):
        import errno

        with open(self.filler, "ab", buffering=0) as file:
            block = b"\0" * 4096
            while True:
                try:
                    file.write(block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
            try:   # the last partial block
                file.write(b"\0" * 512)
            except OSError:
                pass

    def free_up(self):
        self.filler.unlink(missing_ok=True)

    def read_only(self):
        """Remount it read-only (EROFS for every write, root's too)."""
        import subprocess

        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(megabytes)`` mounts a tmpfs of that size (needs root with CAP_SYS_ADMIN, as
    in CI's container; skipped with the reason elsewhere) and unmounts it after the test."""
    import subprocess

    mounted = []

    def mount(megabytes=2):
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
        mounted.append(path)
        return SmallDisk(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
