"""Helpers for tests that run the service in-process: a TOML config writer, a deadline poller
and ``running()``, a started service whose loop goes on in a thread."""

import contextlib
import json
import threading
import time

from pi_backprop.service.config import load_config
from pi_backprop.service.loop import Service
from pi_backprop.service.sdnotify import Notifier

DEADLINE = 60.0   # generous: what takes a second here may take ten on a loaded CI machine

FAST_SENSOR = {
    "model": {"name": "sensor_mlp"},
    "source": {"kind": "simulated-sensor", "interval": 0.01},
    "training": {"burst_steps": 5, "min_samples_per_class": 3, "batch_size": 16, "lr": 0.01,
                 "checkpoint_every_steps": 100_000, "checkpoint_every_seconds": 1},
    "service": {"status_interval": 0.2},
    "web": {"port": 0},   # any free port: tests never clash with a page already served here
}


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):   # an inline table
        return "{" + ", ".join(f"{key} = {toml_value(v)}" for key, v in value.items()) + "}"
    return repr(value)


def write_config(path, base=FAST_SENSOR, **changes):
    """Write ``base`` with ``changes`` ({"section": {"key": value}}) merged in as TOML."""
    sections = {name: dict(keys) for name, keys in base.items()}
    for name, keys in changes.items():
        sections.setdefault(name, {}).update(keys)
    text = "".join(f"[{name}]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in keys.items())
                   for name, keys in sections.items())
    path.write_text(text)
    return path


def wait_for(predicate, timeout=DEADLINE, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def running(config_path, state_dir, **kwargs):
    """A started service whose ``run()`` goes on in a thread; stopped and closed on exit."""
    kwargs.setdefault("notifier", Notifier(environ={}))
    service = Service(load_config(config_path), config_path=config_path, simulate=True, state_dir=state_dir,
                      **kwargs)
    result, errors = {}, []

    def target():
        try:
            result.update(service.run())
        except BaseException as error:    # surfaced by the test below
            errors.append(error)

    with service:
        thread = threading.Thread(target=target, name="service-under-test")
        thread.start()
        service.thread, service.result = thread, result
        try:
            yield service
        finally:
            service.stop_event.set()
            thread.join(DEADLINE)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def checkpoint_files(state_dir):
    return sorted((state_dir / "checkpoints").glob("ckpt-*.npz"))
