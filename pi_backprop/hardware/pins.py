"""Which GPIO pins we talk to: the Pi's real ones, or gpiozero's mock pins on a desktop.

``pin_factory()`` is the one place that decides. On a Raspberry Pi (``/proc/device-tree/model``
says so) gpiozero picks its real backend (lgpio on bookworm; ``$GPIOZERO_PIN_FACTORY``
overrides, as gpiozero documents). Elsewhere, or with ``GPIOZERO_PIN_FACTORY=mock``, or when
asked to simulate, it is gpiozero's ``MockFactory`` with PWM-capable pins, and one log line
says the pins are simulated. Pins are given as gpiozero names: a BCM number (17), "GPIO17",
or a header position ("BOARD11", "J8:11").

gpiozero itself is imported only inside these functions, so importing this module works
without it; asking for pins without it raises a ``HardwareError`` naming the install.
"""

import errno
import logging
import os
from pathlib import Path

from ..exc import HardwareError

_log = logging.getLogger(__name__)

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
INSTALL_HINT = ("pip install 'pi-backprop[pi]' (in a venv made with --system-site-packages on a Pi), "
                "or on Raspberry Pi OS: sudo apt install python3-gpiozero")

_chosen = None   # the factory pin_factory() made, shared by every device of ours


def pi_model(path=DEVICE_TREE_MODEL) -> str | None:
    """The board's model string ("Raspberry Pi 4 Model B Rev 1.4"), or None when not a Pi."""
    try:
        model = Path(path).read_bytes().rstrip(b"\0\n").decode("ascii", "replace")
    except OSError:
        return None
    return model if "Raspberry Pi" in model else None


def import_gpiozero():
    """The ``gpiozero`` module, or a one-line ``HardwareError`` saying how to install it."""
    try:
        import gpiozero
    except ImportError:
        raise HardwareError(f"gpiozero is not installed: {INSTALL_HINT}") from None
    return gpiozero


def mock_factory():
    """A fresh gpiozero ``MockFactory`` whose pins support PWM (for pulsing LEDs).

    The pin class is passed as a class, not by name: gpiozero 1.6 resolves names through
    pkg_resources, 2.0 through importlib; a class works on both.
    """
    import_gpiozero()
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    return MockFactory(pin_class=MockPWMPin)


def wants_simulation(simulate=None, model_path=DEVICE_TREE_MODEL) -> bool:
    """True when the pins should be simulated: asked for, ``GPIOZERO_PIN_FACTORY=mock``, or not a Pi."""
    if simulate is not None:
        return bool(simulate)
    if os.environ.get("GPIOZERO_PIN_FACTORY", "").lower() == "mock":
        return True
    return pi_model(model_path) is None


def pin_factory(simulate=None, *, model_path=DEVICE_TREE_MODEL):
    """The gpiozero pin factory our devices use (made once, then shared).

    simulate : True forces mock pins, False forces real ones, None decides (see module doc).
    It also becomes gpiozero's default (``Device.pin_factory``): gpiozero's software SPI,
    used by ``MCP3008`` on mock pins, asks for the default factory, not the device's.
    """
    global _chosen
    if _chosen is not None:
        return _chosen
    gpiozero = import_gpiozero()
    if wants_simulation(simulate, model_path):
        factory = mock_factory()
        _log.info("no Raspberry Pi GPIO here: pins are simulated (gpiozero mock pins)")
    else:
        try:
            factory = _default_factory(gpiozero)
        except Exception as error:
            raise HardwareError(f"cannot open the GPIO pins ({error}); on Raspberry Pi OS: "
                                f"sudo apt install python3-lgpio, and add the user to the gpio group") from None
    gpiozero.Device.pin_factory = factory
    _chosen = factory
    return factory


def _default_factory(gpiozero):
    """gpiozero's own choice of pin factory, honouring $GPIOZERO_PIN_FACTORY: private in 1.6
    and 2.0 alike, and the only way to get the factory without building a device first."""
    return gpiozero.Device._default_pin_factory()  # noqa: SLF001 (see the docstring)


def reset_pin_factory() -> None:
    """Close and forget the shared factory (tests; the service on shutdown)."""
    global _chosen
    if _chosen is not None:
        try:
            _chosen.close()
        finally:
            import gpiozero
            if gpiozero.Device.pin_factory is _chosen:
                gpiozero.Device.pin_factory = None
            _chosen = None


def describe_factory(factory) -> str:
    """A short name for a pin factory: "mock (simulated)", "lgpio", "rpigpio", ..."""
    name = type(factory).__name__
    if name == "MockFactory":
        return "mock (simulated pins)"
    return name.removesuffix("Factory").lower() or name


def open_device(make, what: str, pin):
    """``make()`` a gpiozero device; its errors become one-line ``HardwareError``s.

    what : who wants the pin, for the message ("label button 'circle'", "status LED red")
    pin  : the pin as configured, for the message
    """
    import_gpiozero()
    from gpiozero import exc

    try:
        return make()
    except exc.GPIOPinInUse:
        raise HardwareError(f"{what}: pin {pin!r} is already in use (by another LED or button in the "
                            f"config, or another program); choose another pin") from None
    except (exc.PinInvalidPin, exc.GPIOPinMissing) as error:
        raise HardwareError(f"{what}: {pin!r} is not a usable pin ({error}); give a BCM number such as 17, "
                            f"or a name such as 'GPIO17' or 'BOARD11'") from None
    except exc.BadPinFactory as error:
        raise HardwareError(f"{what}: no GPIO backend ({error}); on Raspberry Pi OS: "
                            f"sudo apt install python3-lgpio") from None
    except PermissionError:
        raise HardwareError(f"{what}: permission denied on the GPIO device; add the user to the gpio group "
                            f"(sudo adduser $USER gpio) and log in again") from None
    except OSError as error:
        if error.errno in (errno.EBUSY,):
            raise HardwareError(f"{what}: pin {pin!r} is busy (used by another program or a kernel driver); "
                                f"choose another pin") from None
        raise HardwareError(f"{what}: cannot open pin {pin!r}: {error}") from None
    except exc.GPIOZeroError as error:
        raise HardwareError(f"{what}: pin {pin!r}: {error}") from None
    except (TypeError, AttributeError):
        raise  # our bug, not the user's wiring
    except Exception as error:
        # lgpio raises its own lgpio.error, e.g. "GPIO busy" when another process holds the pin.
        if "busy" in str(error).lower():
            raise HardwareError(f"{what}: pin {pin!r} is busy (used by another program or a kernel driver); "
                                f"choose another pin") from None
        raise HardwareError(f"{what}: cannot open pin {pin!r}: {error}") from None


def pin_status(simulate=None, *, model_path=DEVICE_TREE_MODEL) -> str:
    """One line for ``pi-backprop info``: which pin backend would be used, without keeping it."""
    try:
        gpiozero = import_gpiozero()
    except HardwareError as error:
        return str(error)
    if wants_simulation(simulate, model_path):
        why = "GPIOZERO_PIN_FACTORY=mock" if os.environ.get("GPIOZERO_PIN_FACTORY", "").lower() == "mock" \
            else "not a Raspberry Pi"
        return f"mock (simulated pins: {why})"
    if _chosen is not None:
        return describe_factory(_chosen)
    try:
        factory = _default_factory(gpiozero)
    except Exception as error:
        return f"none usable ({error})"
    try:
        return describe_factory(factory)
    finally:
        factory.close()
