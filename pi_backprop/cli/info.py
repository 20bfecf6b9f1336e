"""``pi-backprop info``: what this machine has: board, camera, pins, numba, backend; where
the web page is."""

import platform
import sys

import numpy as np

from .. import __version__
from ..hardware.camera import camera_status
from ..hardware.pins import pi_model, pin_status
from ..nn import get_backend
from ..nn.engine.cache import choose, numba_version
from ..paths import state_dir
from ..service.config import load_config
from .web import add_service_arguments, page_address, service_config, state_dir_of


def add_arguments(parser):
    parser.add_argument("--simulate", action="store_true",
                        help="report the pins as the service would use them with --simulate")
    add_service_arguments(parser)


def _numba_line() -> str:
    version = numba_version()
    if version is None:
        return "not installed: the numpy backend runs instead (same results, slower)"
    return f"{version} (kernel cache: {choose(version).text})"


def _web_line(args) -> str:
    if args is None:
        return page_address(load_config(None), state_dir())
    config = service_config(args)
    return page_address(config, state_dir_of(args, config))


def _mqtt_line(args) -> str:
    config = load_config(None) if args is None else service_config(args)
    if not config.mqtt.enabled:
        return "off (mqtt.enabled = false)"
    from ..exc import ConfigError
    from ..service.mqtt import settings_from

    try:
        settings = settings_from(config, config.model.name, __version__)
    except ConfigError as error:
        return f"will not start: {error}"
    discovery = (f", Home Assistant device {settings.device.id}" if settings.discovery_prefix else "")
    return f"{settings.host}:{settings.port}, topics under {settings.topics.base}/{discovery}"


def lines(simulate=False, args=None) -> list:
    """The report as (label, value) pairs, in print order."""
    model = pi_model()
    return [
        ("pi-backprop", __version__),
        ("board", model or f"not a Raspberry Pi ({platform.machine()})"),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", np.__version__),
        ("numba", _numba_line()),
        ("backend", get_backend()),
        ("camera", camera_status() if model else
         'none (not a Raspberry Pi: use --simulate, or source.kind = "simulated-camera")'),
        ("pins", pin_status(True if simulate else None)),
        ("state dir", str(state_dir())),
        ("web page", _web_line(args)),
        ("mqtt", _mqtt_line(args)),
    ]


def run(args) -> int:
    for label, value in lines(simulate=args.simulate, args=args):
        print(f"{label + ':':<13}{value}")
    return 0
