"""Choosing the pin factory, and `pi-backprop info`."""

import logging
import sys

import pytest

from pi_backprop.cli import main
from pi_backprop.exc import HardwareError
from pi_backprop.hardware import pins


@pytest.fixture
def fresh_pins(monkeypatch):
    monkeypatch.setattr(pins, "_chosen", None)
    yield
    if pins._chosen is not None:
        pins.reset_pin_factory()


@pytest.fixture
def model_file(tmp_path):
    def write(text):
        path = tmp_path / "model"
        path.write_bytes(text.encode() + b"\0")   # the device tree's string ends in NUL
        return path
    return write


def test_pi_model_reads_the_device_tree(model_file, tmp_path):
    assert pins.pi_model(model_file("Raspberry Pi 4 Model B Rev 1.4")) == "Raspberry Pi 4 Model B Rev 1.4"
    assert pins.pi_model(model_file("Pine64 RockPro64")) is None
    assert pins.pi_model(tmp_path / "missing") is None


@pytest.mark.parametrize("simulate, env, is_pi, expected", [
    (None, None, False, True),      # a desktop: simulated
    (None, None, True, False),      # a Pi: real pins
    (None, "mock", True, True),     # GPIOZERO_PIN_FACTORY=mock on a Pi
    (None, "lgpio", False, True),   # another factory named, but no Pi: still simulated
    (True, None, True, True),       # --simulate
    (False, None, False, False),
])
def test_wants_simulation(monkeypatch, model_file, simulate, env, is_pi, expected):
    if env is None:
        monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    else:
        monkeypatch.setenv("GPIOZERO_PIN_FACTORY", env)
    path = model_file("Raspberry Pi 5 Model B Rev 1.0" if is_pi else "Generic x86")
    assert pins.wants_simulation(simulate, path) is expected


def test_desktop_gets_shared_pwm_mock_pins_and_one_log_line(fresh_pins, model_file, caplog):
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory, MockPWMPin
    caplog.set_level(logging.INFO, logger="pi_backprop")
    factory = pins.pin_factory(model_path=model_file("not a pi"))
    assert isinstance(factory, MockFactory) and factory.pin_class is MockPWMPin
    assert pins.pin_factory() is factory and gpiozero.Device.pin_factory is factory
    assert [r.getMessage() for r in caplog.records] == [
        "no Raspberry Pi GPIO here: pins are simulated (gpiozero mock pins)"]
    assert pins.describe_factory(factory) == "mock (simulated pins)"
    pins.reset_pin_factory()
    assert gpiozero.Device.pin_factory is None and pins._chosen is None


def test_missing_gpiozero_names_the_install(monkeypatch, fresh_pins):
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    with pytest.raises(HardwareError, match=r"gpiozero is not installed: pip install 'pi-backprop\[pi\]'"):
        pins.pin_factory(simulate=True)
    assert pins.pin_status(simulate=True).startswith("gpiozero is not installed")


def test_info_prints_what_it_found(capsys, monkeypatch, fresh_pins):
    pytest.importorskip("gpiozero")
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/tmp/pi-backprop-numba-test")
    assert main(["--backend", "numpy", "info"]) == 0
    out = capsys.readouterr().out
    fields = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["backend"] == "numpy"
    assert fields["pins"] == "mock (simulated pins: GPIOZERO_PIN_FACTORY=mock)"
    assert fields["numpy"] == __import__("numpy").__version__
    if pins.pi_model() is None:
        assert fields["board"].startswith("not a Raspberry Pi")
    try:
        import numba
    except ImportError:
        assert fields["numba"].startswith("not installed")
    else:
        from pi_backprop.nn.engine.cache import cache_key
        key = cache_key(numba.__version__)
        assert fields["numba"] == f"{numba.__version__} (kernel cache: /tmp/pi-backprop-numba-test/kernels-{key})"
    assert pins._chosen is None   # info looks, it does not keep a factory


def test_hardware_modules_import_no_hardware_library_and_no_training_core():
    import subprocess
    code = ("import sys, importlib\n"
            "before = set(sys.modules)\n"
            "for name in ('camera', 'sensors', 'leds', 'buttons', 'pins', 'simulated', 'preprocess', 'pacing'):\n"
            "    importlib.import_module('pi_backprop.hardware.' + name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gpiozero', 'picamera2', 'numba')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import ast
    from pathlib import Path
    for path in Path(pins.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert not (node.module or "").startswith(("nn", "modeldef", "trainer", "service")), path
