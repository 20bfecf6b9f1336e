"""``pi-backprop run --simulate`` as a child process, for the benchmarks that measure the
service from outside (SD-card wear, the web page's cost).

Its output goes to a pipe that this process reads, as it goes to journald under systemd::

    with ServiceChild(config_path, state_dir) as child:
        child.wait_for("ready:")
        ... child.log.read(), child.pid ...
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

READY_TIMEOUT = 600.0       # seconds: a first compile on a slow board


class ChildLog:
    """The child's output, read from its pipe: the text, its size, and ``on_line(line,
    monotonic time)`` called for each line as it comes (from the reading thread)."""

    def __init__(self, pipe, on_line=None):
        self.text, self.bytes = "", 0
        self._on_line = on_line
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for raw in pipe:
            line = raw.decode(errors="replace")
            with self._lock:
                self.text += line
                self.bytes += len(raw)
            if self._on_line is not None:
                self._on_line(line, time.monotonic())

    def read(self) -> str:
        with self._lock:
            return self.text

    def close(self) -> None:
        self._thread.join(timeout=10)


class ServiceChild:
    """``run --simulate --config CONFIG --state-dir STATE`` in a child process, stopped with
    SIGTERM (as systemd stops it) when the ``with`` block ends."""

    def __init__(self, config: Path, state: Path, env: dict | None = None, on_line=None):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "pi_backprop", "run", "--simulate", "--config", str(config),
             "--state-dir", str(state)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=dict(env or os.environ, PYTHONUNBUFFERED="1"))
        self.pid = self._process.pid
        self.log = ChildLog(self._process.stdout, on_line)

    def wait_for(self, text: str, timeout: float = READY_TIMEOUT) -> None:
        """Until ``text`` is in the log; RuntimeError with the log's end if the child ends first."""
        deadline = time.monotonic() + timeout
        while text not in self.log.read():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not say {text!r}: {self.log.read()[-2000:]}")
            time.sleep(0.1)

    def running(self) -> bool:
        return self._process.poll() is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._process.send_signal(signal.SIGTERM)
        self._process.wait(timeout=120)
        self.log.close()


def fill_store(state: Path, model: str, count: int) -> None:
    """A store of ``count`` labelled simulated samples for ``model`` (a camera model gets camera
    frames, a sensor model windows), as a few minutes of collecting leave it."""
    from ..hardware import simulated
    from ..modeldef import load_definition
    from ..storage.store import SampleStore

    definition = load_definition(model)
    shape = tuple(definition.input_shape)
    if len(shape) == 3:
        x, y = simulated.camera_dataset(count, 0, shape, definition.classes)
    else:
        x, y = simulated.sensor_dataset(count, 0, shape[0], definition.classes)
    state.mkdir(parents=True, exist_ok=True)
    with SampleStore(state / "samples.db") as store:
        store.set_class_names(definition.classes)
        store.add_samples(x, y, source="benchmark")
