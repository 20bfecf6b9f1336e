
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
