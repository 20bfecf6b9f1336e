"""The sensor part of the small-data study: ``sensor_mlp`` trained on k simulated windows per
class with each augmentation, tested on 800 windows of another seed (``scripts/small-data
--sensor``). No real sensor data ship with the project, so this is the simulated sensor's
answer only: its waves come at random phases, which is what a time shift teaches.
"""

import statistics

import numpy as np

from ..hardware import simulated
from ..modeldef import load_definition
from ..training.datasets import Dataset
from ..training.trainer import Trainer

MODEL = "sensor_mlp"
TABLES = {"none": {}, "time_shift 4": {"time_shift": 4}, "time_shift 8": {"time_shift": 8},
          "time_shift 12": {"time_shift": 12}, "gain 0.2": {"gain": 0.2}, "noise 0.05": {"noise": 0.05},
          "time_shift 8, gain 0.2": {"time_shift": 8, "gain": 0.2}, "defaults": None}
TEST_SEED, TEST_SIZE, POOL = 999, 800, 400
STEPS, BATCH = 600, 16


def run(ks=(3, 5, 10), seeds=range(4), log=print) -> dict:
    """{(table name, k): [held-out accuracy per seed]}; "defaults" is sensor_mlp's own [augment]."""
    definition = load_definition(MODEL)
    length, classes = definition.input_shape[0], definition.classes
    x_test, y_test = simulated.sensor_dataset(TEST_SIZE, TEST_SEED, length, classes)
    results = {}
    for k in ks:
        for seed in seeds:
            x, y = simulated.sensor_dataset(POOL, seed, length, classes)
            pick = np.concatenate([np.flatnonzero(y == c)[:k] for c in range(len(classes))])
            both_x, both_y = np.concatenate([x[pick], x_test]), np.concatenate([y[pick], y_test])
            held_out = np.arange(len(both_x)) >= len(pick)
            for name, table in TABLES.items():
                data = Dataset.from_arrays(both_x, both_y, definition, source="simulated sensor", eval_mask=held_out)
                with Trainer(definition, data, None, seed=seed, eval_every=STEPS, augment=table,
                             batch_size=BATCH) as trainer:
                    accuracy = trainer.run(STEPS).metrics["eval_accuracy"]
                results.setdefault((name, k), []).append(accuracy)
            log(f"k={k} seed={seed} done")
    return results


def markdown(results: dict, ks=(3, 5, 10)) -> str:
    definition = load_definition(MODEL)
    lines = [f"### Small data, simulated sensor: {MODEL}, k windows per class, {TEST_SIZE} held out "
             f"(seed {TEST_SEED}); {STEPS} steps of {BATCH}; accuracy in %, mean ± std (n−1)", "",
             "| augmentation | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for name, table in TABLES.items():
        label = f"defaults `{definition.augment}`" if table is None else f"{name}"
        cells = []
        for k in ks:
            values = [100 * v for v in results[(name, k)]]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {spread:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
