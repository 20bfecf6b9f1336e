"""A trained model back from its checkpoint, for ``evaluate``, ``predict`` and ``report``.

A checkpoint carries its own model definition, so nothing but the file (or its folder) is
needed: ``load_newest(state_dir=...)`` or ``load_newest(checkpoint=FILE_OR_DIR)``.
"""

import dataclasses
from pathlib import Path

import numpy as np

from .. import paths
from ..exc import CheckpointError, ConfigError, ModelDefinitionError
from ..modeldef import ModelDefinition
from ..nn.optim import OPTIMIZERS
from ..storage import checkpoint as ckpt

CHECKPOINT_SUBDIR = "checkpoints"  # the service keeps its checkpoints in STATE_DIR/checkpoints
PREDICT_BATCH = 256                # samples per forward pass: bounds memory on a 512 MB Pi


def confidences(outputs, loss_name) -> np.ndarray:
    """Per-class confidence in [0, 1] from the network's outputs (N, C).

    Softmax for a cross-entropy model; the (sigmoid) outputs as they are for an MSE model.
    """
    outputs = np.asarray(outputs, np.float64)
    if loss_name == "mse":
        return np.clip(outputs, 0.0, 1.0)
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclasses.dataclass
class LoadedModel:
    """A model with the weights of a verified checkpoint.

    model      : ``Sequential`` (``model.definition`` set), dtype of the checkpoint
    definition : the ``ModelDefinition`` stored in the checkpoint
    info       : the ``CheckpointInfo`` it was loaded from (``.path``, ``.step``, ``.header``)
    skipped    : ``[(path, reason)]`` newer checkpoint files that were damaged and passed over
    """

    model: object
    definition: ModelDefinition
    info: ckpt.CheckpointInfo
    skipped: list

    @property
    def class_names(self) -> tuple:
        return tuple(self.definition.classes)

    def describe(self) -> str:
        """One line: model, checkpoint file and step, e.g. for the top of a report."""
        written = str(self.info.header.get("written_at", "?")).replace("T", " ")[:19]
        return (f"model {self.definition.name} from {self.info.path} "
                f"(step {self.info.step}, written {written} UTC)")

    def outputs(self, x) -> np.ndarray:
        """Network outputs float (N, classes) for inputs (N, *input_shape), in bounded batches."""
        x = np.asarray(x, dtype=self.model.dtype)
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), self.model.dtype)
        return np.concatenate([self.model.predict(x[i:i + PREDICT_BATCH])
                               for i in range(0, len(x), PREDICT_BATCH)])

    def predict_classes(self, x) -> np.ndarray:
        """int64 (N,) class index of the highest output for each input."""
        return np.argmax(self.outputs(x), axis=1).astype(np.int64)

    def confidences(self, x) -> np.ndarray:
        """float64 (N, classes) in [0, 1]: softmax for a cross-entropy model, the (sigmoid)
        outputs for an MSE model."""
        return confidences(self.outputs(x), self.definition.loss)


def checkpoint_location(state_dir=None, checkpoint=None) -> Path:
    """The file or folder to load from: ``checkpoint`` if given, else ``STATE_DIR/checkpoints``
    (state dir default: ``paths.state_dir()``)."""
    if checkpoint is not None:
        return Path(checkpoint)
    return Path(state_dir if state_dir is not None else paths.state_dir()) / CHECKPOINT_SUBDIR


def load_newest(state_dir=None, checkpoint=None) -> LoadedModel:
    """The model of the newest intact checkpoint (see ``checkpoint_location``).

    A file is verified and used as it is; in a folder damaged files are skipped (with a
    warning) for the newest intact one. ``CheckpointError`` (one line) if there is none.
    """
    where = checkpoint_location(state_dir, checkpoint)
    skipped = []
    if where.is_file():
        info = ckpt.verify_checkpoint(where)
    elif where.is_dir():
        scan = ckpt.find_latest(where)
        if scan.latest is None:
            raise CheckpointError(f"no checkpoint in {where}: train first (pi-backprop run or "
                                  "pi-backprop train), or give --checkpoint FILE_OR_DIR")
        info, skipped = scan.latest, scan.skipped
    elif checkpoint is not None:
        raise ConfigError(f"checkpoint {where} does not exist: give a ckpt-*.npz file or its folder")
    else:
        raise CheckpointError(f"no checkpoint folder {where}: train first (pi-backprop run or "
                              "pi-backprop train), or give --state-dir DIR or --checkpoint FILE_OR_DIR")
    return LoadedModel(*_build(info), info, skipped)


def _build(info):
    try:
        definition = ModelDefinition.from_dict(info.header["model"], source=str(info.path))
    except (ModelDefinitionError, TypeError, AttributeError) as error:
        raise ckpt.CheckpointRefused(f"{info.path}: its model definition is unusable ({error})") from None
    dtype = info.header.get("dtype")
    if dtype not in ("float32", "float64"):
        raise ckpt.CheckpointRefused(f"{info.path}: parameters of dtype {dtype!r} are not supported")
    model = definition.build(seed=0, dtype=np.dtype(dtype))
    kind = info.header["optimizer"].get("kind") if isinstance(info.header["optimizer"], dict) else None
    if kind not in OPTIMIZERS:
        raise ckpt.CheckpointRefused(f"{info.path}: unknown optimizer {kind!r}")
    # load_into checks every array against the model; the optimizer is only its landing place.
    optimizer = OPTIMIZERS[kind](model, lr=0.0)
    ckpt.load_into(info, model, optimizer)
    return model, definition
