"""Recipes: a model definition plus how to train it, and training one through the trainer.

A recipe is what a user of ``pi-backprop train`` chooses: a definition (a name in models/ or
a path to a .toml), the optimizer and its settings, the batch size, the steps, and (coming
with issue 14) an augmentation table. The registry ``RECIPES`` names the recipes the study
knows; a new one is one line in ``_REGISTRY``. Training goes through
``training.trainer.Trainer`` as ``pi-backprop train`` does (no checkpoints), so the
study measures the product's own training path, data order included.
"""

import dataclasses
from pathlib import Path

import numpy as np

from ..exc import ConfigError
from ..modeldef import ModelDefinition, load_definition
from ..training.datasets import Dataset
from ..training.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One way to train.

    name        : the registry key, also the method's name in the tables
    model       : a models/ name or a path to a .toml definition
    optimizer, lr, batch_size, steps : the training settings (steps: the run's total)
    options     : further ``Trainer`` keywords (``momentum``, ``weight_decay``)
    augment     : the augmentation table. None: whatever the model definition says (the
                  shipped defaults); {}: none at all, whatever the definition says (a
                  recipe "before" augmentation); {"shift": 3, ...}: exactly these
    description : one line for the report
    """

    name: str
    model: str
    optimizer: str
    lr: float
    batch_size: int
    steps: int
    options: dict = dataclasses.field(default_factory=dict)
    augment: dict | None = None
    description: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def definition(self) -> ModelDefinition:
        return load_definition(self.model)

    def trainer_options(self) -> dict:
        """Keywords for ``Trainer``: every setting of this recipe that decides what is trained
        (``augment`` None: the definition's own table; {}: none)."""
        return {"optimizer": self.optimizer, "lr": self.lr, "batch_size": self.batch_size, "augment": self.augment,
                **self.options}


SMALL_MODEL = str(Path(__file__).resolve().parent / "models" / "camera_cnn_small.toml")   # tried, not shipped


def _camera(name, augment, steps=1500, optimizer="adam", description="", model="camera_cnn", **options):
    return Recipe(name, model, optimizer, 2e-3, 32, steps, options=options, augment=augment,
                  description=description)


_REGISTRY = [
    _camera("shipped", {}, steps=600, description="camera_cnn as shipped before issue 14 (600 steps)"),
    _camera("shipped-1500", {}, description="the same, 1500 steps: what more steps alone give"),
    _camera("shift3", {"shift": 3}, description="shifts of up to 3 px"),
    _camera("rotate15", {"rotate": 15}, description="turns of up to 15°"),
    _camera("scale15", {"scale": 0.15}, description="sizes ±15%"),
    _camera("light", {"brightness": 0.2, "contrast": 0.2}, description="brightness and contrast ±20%"),
    _camera("noise", {"noise": 0.03}, description="Gaussian noise of std 0.03"),
    _camera("hflip", {"hflip": True}, description="mirror images (off in the defaults)"),
    _camera("defaults", None, description="camera_cnn's shipped [augment]: all of the above but hflip"),
    _camera("defaults-adamw", None, optimizer="adamw", weight_decay=0.01,
            description="the defaults with AdamW, weight decay 0.01"),
    _camera("small", {}, model=SMALL_MODEL, description="camera_cnn_small (global average, dropout), no augmentation"),
    _camera("small-defaults", dict(load_definition("camera_cnn").augment), model=SMALL_MODEL,
            description="camera_cnn_small with camera_cnn's shipped [augment]"),
]
RECIPES = {recipe.name: recipe for recipe in _REGISTRY}


def lookup(names) -> list:
    """The recipes named (an iterable of registry keys), in that order; ``ConfigError`` for
    an unknown one."""
    found = []
    for name in names:
        if name not in RECIPES:
            raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
        found.append(RECIPES[name])
    return found


def trainer_for(recipe: Recipe, definition: ModelDefinition, x: np.ndarray, y: np.ndarray,
                train_index: np.ndarray, test_index: np.ndarray, seed: int, steps: int) -> Trainer:
    """A ``Trainer`` (not yet run) of ``recipe`` on ``x[train_index]``, evaluated on
    ``x[test_index]`` once, at the end of ``steps`` steps. The initial weights and the data
    order are those of ``seed``, as for ``pi-backprop train --seed``.

    x : float32 (N, *input_shape); y : int64 (N,); train_index, test_index : disjoint intp.
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if np.intersect1d(train_index, test_index).size:
        raise ConfigError("the training draw overlaps the held-out images")
    index = np.concatenate([train_index, test_index])
    held_out = np.arange(len(index)) >= len(train_index)
    dataset = Dataset.from_arrays(x[index], y[index], definition, source=f"digits ({len(train_index)} drawn)",
                                  eval_mask=held_out)
    return Trainer(definition, dataset, None, seed=seed, eval_every=steps, **recipe.trainer_options())


def train(trainer: Trainer, steps: int) -> float:
    """Run ``trainer`` to ``steps`` steps; the held-out accuracy in [0, 1]."""
    result = trainer.run(steps)
    return float(result.metrics["eval_accuracy"])


def accuracy(trainer: Trainer, x: np.ndarray, y: np.ndarray) -> float:
    """The trained model's accuracy on x (N, *input_shape), y int (N,), in [0, 1]."""
    return float(np.mean(trainer.model.predict(x).argmax(axis=1) == y))
