"""The benchmark's wear figure: bytes the service writes to the card per hour.

``pi-backprop run --simulate`` runs as a child process on a real file system (the counter
does not see a tmpfs), and its ``write_bytes`` (``/proc/<pid>/io``: bytes it caused to be
sent to storage) is read from READY on, for two situations of each shipped service model:

- **collecting**: a person labels one sample a second (``source.interval = 1``, the
  simulated operator holding a class all the time);
- **steady**: the samples are in, nobody labels; measured once the service has trained on
  what it has, rested and saved that (what it wrote until then is ``to_rest_bytes``).

Linux only (``/proc``).
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {"sensor_mlp": "simulated-sensor", "camera_cnn": "simulated-camera"}
STEADY_SAMPLES = 400        # labelled samples in the store for the steady case
READY_TIMEOUT = 600.0       # seconds: a first compile on a slow board


def _config(model: str, scenario: str) -> str:
    labelling = scenario == "collecting"
    return (f'[model]\nname = "{model}"\n[source]\nkind = "{MODELS[model]}"\n'
            f"interval = {1.0 if labelling else 0.05}\n"
            f"[labels]\nsimulated = {'true' if labelling else 'false'}\n"
            "[training]\nmin_samples_per_class = 5\n")


def _fill(state: Path, model: str) -> None:
    """A store of STEADY_SAMPLES labelled samples, as a few minutes of collecting leave it."""
    from ..hardware import simulated
    from ..modeldef import load_definition
    from ..storage.store import SampleStore

    definition = load_definition(model)
    if MODELS[model] == "simulated-camera":
        x, y = simulated.camera_dataset(STEADY_SAMPLES, 0, tuple(definition.input_shape), definition.classes)
    else:
        x, y = simulated.sensor_dataset(STEADY_SAMPLES, 0, definition.input_shape[0], definition.classes)
    state.mkdir(parents=True, exist_ok=True)
    with SampleStore(state / "samples.db") as store:
        store.set_class_names(definition.classes)
        store.add_samples(x, y, source="wear benchmark")


def _written(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as io:
            fields = dict(line.split(": ") for line in io.read().splitlines())
        return int(fields["write_bytes"])
    except (OSError, KeyError, ValueError):
        return None


def _stored(state: Path) -> tuple[int, int]:
    """(samples, bytes of sample data) in the store."""
    import contextlib
    import sqlite3

    path = state / "samples.db"
    if not path.exists():
        return 0, 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        count, size = db.execute("SELECT count(*), coalesce(sum(nbytes), 0) FROM samples").fetchone()
    return int(count), int(size)


def _wait_for_rest(log: Path, child: subprocess.Popen) -> None:
    """Until the service has rested and written the checkpoint after it."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        text = log.read_text()
        rest = text.find("resting until new samples come")
        if rest >= 0 and "checkpoint ckpt-" in text[rest:]:
            return
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not come to rest: {text[-2000:]}")
        time.sleep(0.2)


def measure(model: str, scenario: str, seconds: float, workdir: Path, env: dict | None = None) -> dict:
    """One run: write_bytes from READY on for ``seconds``; the figures per hour and per day,
    and for collecting the sample data stored meanwhile."""
    folder = Path(tempfile.mkdtemp(prefix=f"wear-{model}-{scenario}-", dir=workdir))
    config, state = folder / "config.toml", folder / "state"
    config.write_text(_config(model, scenario))
    if scenario == "steady":
        _fill(state, model)
    log = (folder / "log.txt").open("w")
    child = subprocess.Popen([sys.executable, "-m", "pi_backprop", "run", "--simulate", "--config", str(config),
                              "--state-dir", str(state)], stdout=log, stderr=subprocess.STDOUT,
                             env=dict(env or os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while "ready:" not in (folder / "log.txt").read_text():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start: {(folder / 'log.txt').read_text()[-2000:]}")
            time.sleep(0.1)
        settled = {"to_rest_bytes": None, "to_rest_seconds": None}
        if scenario == "steady":   # the steady state begins once it has trained enough and saved that
            ready_bytes, ready_time = _written(child.pid), time.monotonic()
            _wait_for_rest(folder / "log.txt", child)
            settled = {"to_rest_bytes": _written(child.pid) - ready_bytes,
                       "to_rest_seconds": round(time.monotonic() - ready_time, 1)}
        before, samples_before = _written(child.pid), _stored(state)
        started = time.monotonic()
        time.sleep(seconds)
        after, elapsed = _written(child.pid), time.monotonic() - started
        samples_after = _stored(state)
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=120)
        log.close()
    if before is None or after is None:
        raise RuntimeError("/proc/<pid>/io cannot be read here (not Linux?)")
    written = after - before
    stored, data = samples_after[0] - samples_before[0], samples_after[1] - samples_before[1]
    result = {"model": model, "scenario": scenario, "seconds": round(elapsed, 1), "write_bytes": written,
              "per_hour": written / elapsed * 3600, "per_day": written / elapsed * 86400,
              "samples_stored": stored, "sample_bytes": data, **settled}
    if scenario == "collecting" and data > 0:
        result["times_raw"] = written / data
    return result


def run_all(seconds: float, workdir: Path | None = None, env: dict | None = None) -> list:
    """Both situations for both shipped service models."""
    workdir = Path(workdir or tempfile.gettempdir())
    return [measure(model, scenario, seconds, workdir, env)
            for model in MODELS for scenario in ("collecting", "steady")]


def markdown(results: list) -> str:
    from ..budget import size_text

    lines = ["| model | situation | written per hour | per day | sample data stored per hour | written / data |",
             "|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        data = r["sample_bytes"] / r["seconds"] * 3600
        ratio = f"{r['times_raw']:.1f}×" if "times_raw" in r else "-"
        lines.append(f"| {r['model']} | {r['scenario']} | {size_text(r['per_hour'])} | {size_text(r['per_day'])} | "
                     f"{size_text(data) if r['sample_bytes'] else '-'} | {ratio} |")
        if r.get("to_rest_bytes") is not None:
            notes.append(f"{r['model']}: {size_text(r['to_rest_bytes'])} written from READY until it rested "
                         f"({r['to_rest_seconds']:.0f} s)")
    return "\n".join(lines) + ("\n\nBefore the steady state: " + "; ".join(notes) + "." if notes else "")
