"""The service part of the small-data study: ``pi-backprop run --simulate`` on the simulated
camera, as a user meets it, until its validation accuracy reaches TARGET; how many labelled
samples (and seconds) that took, with camera_cnn's shipped [augment] and without it
(``scripts/small-data --service``).

The simulated operator labels every frame; the service trains in bursts meanwhile and stops
at the target (``Service(until_accuracy=...)``, with at least ``loop.MIN_VALIDATION``
validation samples). A run that does not get there within LIMIT seconds counts as missed.
"""

import statistics
import tempfile
import time
from pathlib import Path

from ..modeldef import find_model_file
from ..service.config import load_config
from ..service.loop import Service
from ..service.sdnotify import Notifier

MODEL = "camera_cnn"
TARGET = 0.95
LIMIT = 300.0            # seconds a run may take
INTERVAL = 0.05          # seconds between frames of the simulated camera


def _config(folder: Path, model: str, seed: int) -> Path:
    path = folder / "config.toml"
    path.write_text(f'[model]\nname = "{model}"\nseed = {seed}\n[source]\nkind = "simulated-camera"\n'
                    f"interval = {INTERVAL}\n[training]\nmin_samples_per_class = 3\n")
    return path


def _without_augment(folder: Path) -> Path:
    """A copy of the shipped definition without its [augment] table: the "before"."""
    text = find_model_file(MODEL).read_text(encoding="utf-8")
    path = folder / f"{MODEL}_plain.toml"
    path.write_text(text.split("\n[augment]")[0].rsplit("\n# Training batches only", 1)[0] + "\n", encoding="utf-8")
    return path


def run_once(augmented: bool, seed: int) -> dict:
    """One service run; {"samples", "seconds", "steps", "accuracy", "reached"}."""
    with tempfile.TemporaryDirectory(prefix="pi-backprop-study-") as folder:
        folder = Path(folder)
        model = MODEL if augmented else str(_without_augment(folder))
        config_path = _config(folder, model, seed)
        started = time.monotonic()
        with Service(load_config(config_path), config_path=config_path, simulate=True, state_dir=folder / "state",
                     until_accuracy=TARGET, max_seconds=LIMIT, notifier=Notifier(environ={})) as service:
            summary = service.run()
        seconds = time.monotonic() - started
    accuracy = summary.get("accuracy")
    return {"samples": summary.get("samples"), "seconds": round(seconds, 1), "steps": summary.get("steps"),
            "accuracy": accuracy, "reached": accuracy is not None and accuracy >= TARGET and seconds < LIMIT}


def run(seeds=range(3), log=print) -> dict:
    """{"before": [run_once, ...], "after": [...]}, alternating, one pair per seed."""
    results = {"before": [], "after": []}
    for seed in seeds:
        for name, augmented in (("before", False), ("after", True)):
            outcome = run_once(augmented, seed)
            results[name].append(outcome)
            log(f"{name} seed={seed}: {outcome}")
    return results


def markdown(results: dict) -> str:
    lines = [f"### The simulated camera through the service: labelled samples until {TARGET:.0%} validation "
             f"accuracy ({MODEL}, a frame every {INTERVAL:g} s, every frame labelled)", "",
             "| camera_cnn | runs reaching it | labelled samples | seconds | steps |", "|---|---:|---:|---:|---:|"]
    for name, label in (("before", "without [augment] (before)"), ("after", "shipped [augment] (after)")):
        runs = results[name]
        reached = [r for r in runs if r["reached"]]

        def spread(key):
            values = [r[key] for r in reached]
            if not values:
                return "-"
            deviation = f" ± {statistics.stdev(values):.0f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.0f}{deviation}"
        lines.append(f"| {label} | {len(reached)} of {len(runs)} | {spread('samples')} | {spread('seconds')} | "
                     f"{spread('steps')} |")
    return "\n".join(lines)
