"""Recipes: a model definition plus how to train it, and training one through the trainer.

A recipe is what a user of ``pi-backprop train`` chooses: a definition (a name in models/ or
a path to a .toml), the optimizer and its settings, the batch size, the steps, and (coming
with issue 14) an augmentation table. The registry ``RECIPES`` names the recipes the study
knows; a new one is one line in ``_REGISTRY``. Training goes through
``training.trainer.Trainer`` as ``pi-backprop train`` does (no checkpoints), so the
study measures the product's own training path, data order included.
"""

import dataclasses

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
        """Keywords for ``Trainer``: every setting of this recipe that decides what is trained.

        THE place where augmentation is wired in: once the trainer takes an augmentation
        table (for example ``Trainer(..., augment=...)``), pass ``self.augment`` here, None
        meaning the definition's own table and {} meaning none, and drop the refusal below.
        Until then a recipe that asks for augmentation is refused rather than measured
        without it.
        """
        if self.augment:
            raise ConfigError(f"recipe {self.name!r} asks for augmentation {self.augment}, which the trainer "
                              "does not take yet (wire it in at pi_backprop/study/recipes.py, "
                              "Recipe.trainer_options)")
        return {"optimizer": self.optimizer, "lr": self.lr, "batch_size": self.batch_size, **self.options}


_REGISTRY = [
    Recipe("shipped", "camera_cnn", "adam", 2e-3, 32, 600, augment={},
           description="camera_cnn as shipped before issue 14"),
    # Coming with issue 14, one line each once their parts exist:
    # Recipe("augment-shift", "camera_cnn", "adam", 2e-3, 32, 600, augment={"shift": 3}),
    # Recipe("camera_cnn_small", "camera_cnn_small", "adam", 2e-3, 32, 600),
    # Recipe("defaults", "camera_cnn", "adam", 2e-3, 32, 600, augment=None),
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
