"""The benchmark's wear figure: bytes the service writes to the card per hour.

``pi-backprop run --simulate`` runs as a child process on a real file system (the counter
does not see a tmpfs), and its ``write_bytes`` (``/proc/<pid>/io``: bytes it caused to be
sent to storage) is read from READY on, for two situations of each shipped service model:

- **collecting**: a person labels one sample a second (``source.interval = 1``, the
  simulated operator holding a class all the time);
- **steady**: the samples are in, nobody labels; measured once the service has trained on
  what it has, rested and saved that (what it wrote until then is ``to_rest_bytes``).

The child's log goes to a pipe that this process reads, as it goes to journald under
systemd: ``write_bytes`` is then the service's own writes (store, checkpoints), and the log's
size is given on its own (journald writes it, compressed, in its own files).

Linux only (``/proc``).
"""

import tempfile
import time
from pathlib import Path

from .service_child import READY_TIMEOUT, ServiceChild, fill_store

MODELS = {"sensor_mlp": "simulated-sensor", "camera_cnn": "simulated-camera"}
STEADY_SAMPLES = 400        # labelled samples in the store for the steady case


def _config(model: str, scenario: str, write_every: float | None) -> str:
    labelling = scenario == "collecting"
    store = "" if write_every is None else f"[store]\nwrite_every_seconds = {write_every}\n"
    return (f'[model]\nname = "{model}"\n[source]\nkind = "{MODELS[model]}"\n'
            f"interval = {1.0 if labelling else 0.05}\n"
            f"[labels]\nsimulated = {'true' if labelling else 'false'}\n"
            f"[training]\nmin_samples_per_class = 5\n{store}")


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


def _wait_for_rest(child: ServiceChild) -> None:
    """Until the service has rested and written the checkpoint after it."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        text = child.log.read()
        rest = text.find("resting until new samples come")
        if rest >= 0 and "checkpoint ckpt-" in text[rest:]:
            return
        if not child.running() or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not come to rest: {text[-2000:]}")
        time.sleep(0.2)


def measure(model: str, scenario: str, seconds: float, workdir: Path, env: dict | None = None,
            write_every: float | None = None) -> dict:
    """One run: write_bytes from READY on for ``seconds``; the figures per hour and per day,
    the log's size meanwhile, and for collecting the sample data stored meanwhile.
    ``write_every``: the service's ``store.write_every_seconds`` (None: its default)."""
    folder = Path(tempfile.mkdtemp(prefix=f"wear-{model}-{scenario}-", dir=workdir))
    config, state = folder / "config.toml", folder / "state"
    config.write_text(_config(model, scenario, write_every))
    if scenario == "steady":
        fill_store(state, model, STEADY_SAMPLES)
    with ServiceChild(config, state, env) as child:
        child.wait_for("ready:")
        settled = {"to_rest_bytes": None, "to_rest_seconds": None}
        if scenario == "steady":   # the steady state begins once it has trained enough and saved that
            ready_bytes, ready_time = _written(child.pid), time.monotonic()
            _wait_for_rest(child)
            settled = {"to_rest_bytes": _written(child.pid) - ready_bytes,
                       "to_rest_seconds": round(time.monotonic() - ready_time, 1)}
        before, samples_before, log_before = _written(child.pid), _stored(state), child.log.bytes
        started = time.monotonic()
        time.sleep(seconds)
        after, elapsed = _written(child.pid), time.monotonic() - started
        log_bytes, samples_after = child.log.bytes - log_before, _stored(state)
    if before is None or after is None:
        raise RuntimeError("/proc/<pid>/io cannot be read here (not Linux?)")
    written = after - before
    stored, data = samples_after[0] - samples_before[0], samples_after[1] - samples_before[1]
    result = {"model": model, "scenario": scenario, "write_every": write_every, "seconds": round(elapsed, 1),
              "write_bytes": written, "per_hour": written / elapsed * 3600, "per_day": written / elapsed * 86400,
              "log_per_day": log_bytes / elapsed * 86400, "samples_stored": stored, "sample_bytes": data,
              **settled}
    if scenario == "collecting" and data > 0:
        result["times_raw"] = written / data
    return result


LONG_BATCH = 60.0            # seconds: the collecting case again with store.write_every_seconds this long


def run_all(seconds: float, workdir: Path | None = None, env: dict | None = None) -> list:
    """Both situations for both shipped service models, and collecting with LONG_BATCH."""
    workdir = Path(workdir or tempfile.gettempdir())
    cases = [(scenario, None) for scenario in ("collecting", "steady")] + [("collecting", LONG_BATCH)]
    return [measure(model, scenario, seconds, workdir, env, write_every)
            for model in MODELS for scenario, write_every in cases]


def markdown(results: list) -> str:
    from ..budget import size_text

    lines = ["| model | situation | written per hour | per day | sample data stored per hour | written / data "
             "| log per day |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    for r in results:
        data = r["sample_bytes"] / r["seconds"] * 3600
        ratio = f"{r['times_raw']:.1f}×" if "times_raw" in r else "-"
        every = r.get("write_every")
        situation = r["scenario"] + ("" if every is None else f", write_every_seconds {every:g}")
        lines.append(f"| {r['model']} | {situation} | {size_text(r['per_hour'])} | {size_text(r['per_day'])} | "
                     f"{size_text(data) if r['sample_bytes'] else '-'} | {ratio} | {size_text(r['log_per_day'])} |")
        if r.get("to_rest_bytes") is not None:
            notes.append(f"{r['model']}: {size_text(r['to_rest_bytes'])} written from READY until it rested "
                         f"({r['to_rest_seconds']:.0f} s)")
    return "\n".join(lines) + ("\n\nBefore the steady state: " + "; ".join(notes) + "." if notes else "")
