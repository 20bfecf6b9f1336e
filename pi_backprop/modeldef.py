"""Model definitions: named architectures in TOML, validated before anything trains.

A definition names its input shape, its classes, its loss and its layers; a layer's input
size (``in_features``, ``in_channels``) is taken from the layer before it::

    name = "sensor_mlp"
    input_shape = [32]
    classes = ["still", "walking", "tapping", "shaking"]
    loss = "softmax_cross_entropy"          # or "mse"

    [[layers]]
    type = "dense"
    out_features = 64
    [[layers]]
    type = "relu"

    [training]                               # optional defaults for `pi-backprop train`
    optimizer = "adam"
    lr = 0.001
    batch_size = 32

Named models are looked up in ``$PI_BACKPROP_MODELS``, the source tree's ``models/``
and ``<prefix>/share/pi-backprop/models`` (where ``pip install`` puts them).
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from . import budget
from .exc import ConfigError, ModelDefinitionError
from .nn import layers as L
from .nn.augment import Augment
from .nn.losses import MSELoss, SoftmaxCrossEntropy
from .nn.optim import OPTIMIZERS
from .nn.sequential import Sequential

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

LOSSES = {"softmax_cross_entropy": SoftmaxCrossEntropy, "mse": MSELoss}
TRAINING_KEYS = {"optimizer": str, "lr": float, "batch_size": int, "momentum": float, "weight_decay": float}

# type -> (class, required keys, optional keys), from the layer classes (``layers.Layer``);
# the keys the class takes ``from_below`` are filled from the layer below when left out.
DEFAULT_BATCH = 32     # the batch size a definition without one trains with (memory_needed)
FLOAT_BYTES = 4
LAYER_TYPES = {cls.toml_type: (cls, cls.toml_required, cls.toml_optional) for cls in L.LAYER_CLASSES}
TOP_KEYS = {"name", "description", "input_shape", "classes", "loss", "layers", "training", "augment"}


@dataclasses.dataclass(frozen=True)
class ModelDefinition:
    """A validated model definition. ``to_dict()`` round-trips through ``from_dict``."""

    name: str
    input_shape: tuple
    classes: tuple
    loss: str
    layers: tuple          # of dicts: {"type": ..., keyword: value}
    training: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    augment: dict = dataclasses.field(default_factory=dict)   # the [augment] table (nn.augment), set keys only

    @classmethod
    def from_dict(cls, data: dict, source: str = "model definition") -> "ModelDefinition":
        def fail(message: str) -> NoReturn:
            raise ModelDefinitionError(f"{source}: {message}")

        if not isinstance(data, dict):
            fail("must be a table of keys")
        unknown = sorted(set(data) - TOP_KEYS)
        if unknown:
            fail(f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(TOP_KEYS))}")
        for key in ("name", "input_shape", "classes", "layers"):
            if key not in data:
                fail(f"missing key {key!r}")
        shape = data["input_shape"]
        if (not isinstance(shape, list | tuple) or len(shape) not in (1, 3)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            fail(f"input_shape must be [features] or [channels, height, width] of positive ints, got {shape!r}")
        classes = data["classes"]
        if (not isinstance(classes, list | tuple) or len(classes) < 2
                or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes)):
            fail(f"classes must be a list of at least 2 distinct names, got {classes!r}")
        loss = data.get("loss", "softmax_cross_entropy")
        if not isinstance(loss, str) or loss not in LOSSES:  # a list would be unhashable
            fail(f"loss {loss!r} is unknown; choose one of {', '.join(LOSSES)}")
        training = data.get("training", {})
        if not isinstance(training, dict):
            fail("[training] must be a table")
        for key, value in training.items():
            kind = TRAINING_KEYS.get(key)
            if kind is None:
                fail(f"training.{key} is unknown; known keys: {', '.join(TRAINING_KEYS)}")
            widened = kind is float and isinstance(value, int)  # 1 for 1.0
            if not isinstance(value, kind) and not widened or isinstance(value, bool):
                fail(f"training.{key} must be a {kind.__name__}, got {value!r}")
            if key == "optimizer" and value not in OPTIMIZERS:
                fail(f"training.optimizer {value!r} is unknown; choose {' or '.join(OPTIMIZERS)}")
            if key in ("lr", "batch_size") and not value > 0:
                fail(f"training.{key} must be > 0, got {value!r}")
            if key in ("momentum", "weight_decay") and not value >= 0:
                fail(f"training.{key} must be >= 0, got {value!r}")
        table = data.get("augment", {})
        if not isinstance(table, dict):
            fail("[augment] must be a table")
        try:
            augment = Augment.from_table(table, tuple(shape)).to_table()
        except ConfigError as error:
            fail(str(error))
        layer_specs = data["layers"]
        if not isinstance(layer_specs, list) or not layer_specs:
            fail("layers must be a non-empty list of [[layers]] tables")
        layers = []
        for index, spec in enumerate(layer_specs):
            if not isinstance(spec, dict) or "type" not in spec:
                fail(f"layer {index} needs a 'type' ({', '.join(LAYER_TYPES)})")
            kind = LAYER_TYPES.get(spec["type"]) if isinstance(spec["type"], str) else None
            if kind is None:
                fail(f"layer {index}: unknown type {spec['type']!r}; known types: {', '.join(LAYER_TYPES)}")
            _, required, optional = kind
            for key in spec:
                if key != "type" and key not in required + optional:
                    fail(f"layer {index} ({spec['type']}): unknown key {key!r}; "
                         f"known keys: {', '.join(required + optional) or 'none'}")
            for key in required:
                if key not in spec:
                    fail(f"layer {index} ({spec['type']}): missing key {key!r}")
            layers.append({k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        definition = cls(name=str(data["name"]), input_shape=tuple(shape), classes=tuple(classes),
                         loss=loss, layers=tuple(layers), training=dict(training),
                         description=str(data.get("description", "")), augment=augment)
        # The layers' shapes first, without their arrays: a definition (or a checkpoint
        # header) that asks for more memory than there is must not allocate it.
        layers, outputs = definition._make_layers(allocate=False)
        budget.refuse_over(definition.memory_needed(layers), f"{source}: model {definition.name!r}",
                           ModelDefinitionError)
        outputs = definition.build().output_shapes[-1]  # proves the layers fit together
        if outputs != (len(classes),):
            fail(f"the last layer gives outputs of shape {outputs}, but there are {len(classes)} classes")
        return definition

    def build(self, seed: int | None = None, dtype: "DTypeLike" = np.float32) -> Sequential:
        """A freshly initialised ``Sequential`` for this definition (``model.definition`` is set)."""
        layers, _ = self._make_layers()
        model = Sequential(layers, seed=seed, dtype=dtype, input_shape=self.input_shape)
        model.definition = self
        return model

    def _make_layers(self, *, allocate: bool = True) -> tuple[list, list]:
        """The layers and their per-sample output shapes; without parameter arrays unless
        ``allocate``."""
        layers, shapes, shape = [], [], self.input_shape
        with contextlib.nullcontext() if allocate else L.shapes_only():
            for index, spec in enumerate(self.layers):
                cls, _, _ = LAYER_TYPES[spec["type"]]
                kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items() if k != "type"}
                try:
                    layer = cls(**{**cls.from_below(shape), **kwargs})
                    shape = layer.output_shape(shape)
                except ModelDefinitionError as error:
                    raise ModelDefinitionError(f"{self.name}: layer {index} ({spec['type']}): {error}") from None
                layers.append(layer)
                shapes.append(shape)
        return layers, shapes

    def memory_needed(self, layers: list | None = None, batch_size: int | None = None) -> int:
        """Bytes that training this model in float32 needs at least (``batch_size`` default:
        its [training] one, else 32): parameters, gradients and two optimizer buffers, each
        layer's output and its gradient for the batch, and a convolution's unfolded input."""
        if layers is None:
            layers, _ = self._make_layers(allocate=False)
        batch = batch_size or int(self.training.get("batch_size", DEFAULT_BATCH))
        parameters = sum(math.prod(shape) for layer in layers for shape in layer.param_shapes().values())
        values, workspace, shape = math.prod(self.input_shape), 0, self.input_shape
        for layer in layers:
            out = layer.output_shape(shape)
            values += math.prod(out) * (2 if isinstance(layer, L.Dropout) else 1)   # and its mask
            if isinstance(layer, L.Conv2D):
                workspace = max(workspace, math.prod(out[1:]) * layer.in_channels * math.prod(layer.kernel_size))
            shape = out
        return FLOAT_BYTES * (4 * parameters + batch * (2 * values + workspace))

    def make_loss(self) -> SoftmaxCrossEntropy | MSELoss:
        return LOSSES[self.loss]()

    def to_dict(self) -> dict:
        data = {"name": self.name, "input_shape": list(self.input_shape), "classes": list(self.classes),
                "loss": self.loss, "layers": [{k: list(v) if isinstance(v, tuple) else v
                                               for k, v in spec.items()} for spec in self.layers]}
        if self.training:
            data["training"] = dict(self.training)
        if self.augment:
            data["augment"] = dict(self.augment)
        if self.description:
            data["description"] = self.description
        return data

    def to_json(self) -> str:
        """Canonical JSON: equal definitions give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def model_search_path() -> list:
    """Folders searched for ``<name>.toml``, first match wins."""
    folders = [Path(p) for p in os.environ.get("PI_BACKPROP_MODELS", "").split(os.pathsep) if p]
    folders.append(Path(__file__).resolve().parent.parent / "models")
    folders.append(Path(sys.prefix) / "share" / "pi-backprop" / "models")
    return folders


def available_models() -> list:
    """Names of the models found on the search path, sorted."""
    return sorted({p.stem for folder in model_search_path() if folder.is_dir() for p in folder.glob("*.toml")})


def find_model_file(path_or_name: Path | str) -> Path:
    candidate = Path(path_or_name)
    if candidate.suffix == ".toml" or os.sep in str(path_or_name):
        if not candidate.is_file():
            raise ModelDefinitionError(f"model definition {str(candidate)!r} does not exist")
        return candidate
    for folder in model_search_path():
        path = folder / f"{path_or_name}.toml"
        if path.is_file():
            return path
    names = ", ".join(available_models()) or "none found"
    raise ModelDefinitionError(f"no model named {str(path_or_name)!r}; available: {names} "
                               "(or give a path to a .toml file)")


def load_definition(path_or_name: Path | str) -> ModelDefinition:
    """Read and validate a model definition by name (``models/<name>.toml``) or path."""
    path = find_model_file(path_or_name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ModelDefinitionError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelDefinitionError(f"{path}: cannot be read: {error}") from None
    return ModelDefinition.from_dict(data, source=str(path))


def load_model(path_or_name: Path | str, seed: int | None = None, dtype: "DTypeLike" = np.float32) -> Sequential:
    """A freshly initialised ``Sequential`` from a model definition (name or path)."""
    return load_definition(path_or_name).build(seed=seed, dtype=dtype)
