"""What a checkpoint header's fields must be: one table, checked on every load.

A header whose hash is right can still hold nonsense: written by a tool, by hand, or by a
hostile user who recomputed the hash. ``check_header`` refuses it before anything reads a
field, with one line naming the field (``CheckpointRefused``), so that ``checkpoint list``,
``predict`` and ``train`` never meet a string where a step count belongs.

Fields not listed are allowed (a newer version may add some); a listed field that is
present must have its kind (``verify_checkpoint`` has made sure the required ones are). The model
definition is checked by ``ModelDefinition.from_dict`` itself.
"""

import math
from pathlib import Path

from ..exc import CheckpointRefused, PiBackpropError
from ..modeldef import ModelDefinition


def _integer(value: object, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


# field: (test, what it must be)
_COUNT = (_integer, "an integer >= 0")
_POSITIVE = (lambda v: _integer(v, 1), "an integer >= 1")
_NUMBER = (_number, "a finite number")
_TEXT = (lambda v: isinstance(v, str), "a string")
_TABLE = (lambda v: isinstance(v, dict), "a table")
_METRIC = (lambda v: v is None or _number(v), "a finite number or null")

TOP = {"step": _COUNT, "model": _TABLE, "dtype": (lambda v: v in ("float32", "float64"), '"float32" or "float64"'),
       "optimizer": _TABLE, "arrays": _TABLE, "sha256": _TEXT, "training": _TABLE, "rng": _TABLE, "data": _TABLE,
       "metrics": _TABLE, "written_at": _TEXT, "library_version": _TEXT, "numpy_version": _TEXT}
OPTIMIZER = {"kind": _TEXT, "hyper": _TABLE, "step": _COUNT}
TRAINING = {"optimizer": _TEXT, "batch_size": _POSITIVE, "seed": _COUNT, "lr": _NUMBER, "momentum": _NUMBER,
            "weight_decay": _NUMBER, "checkpoint_every": _POSITIVE, "eval_every": _POSITIVE, "keep": _POSITIVE,
            "max_grad_norm": _METRIC, "augment": _TABLE}
RNG = {"scheme": _TEXT, "seed": _COUNT, "epoch": _COUNT, "bit_generator": _TABLE}
DATA = {"source": _TEXT, "fingerprint": _TEXT, "samples": _COUNT, "train": _COUNT, "held_out": _COUNT,
        "epoch": _COUNT, "batch_in_epoch": _COUNT}
ARRAY = {"dtype": _TEXT, "shape": (lambda v: isinstance(v, list) and all(_integer(n) for n in v),
                                   "a list of integers >= 0"), "sha256": _TEXT}


def check_header(header: dict, path: Path) -> None:
    """``CheckpointRefused`` naming the first field of ``header`` (read from ``path``) that
    is missing or not of its kind."""
    _check(header, TOP, "", path)   # the required fields are there (verify_checkpoint checks first)
    _check(header["optimizer"], OPTIMIZER, "optimizer.", path)
    if "kind" not in header["optimizer"] or "step" not in header["optimizer"]:
        raise CheckpointRefused(f"{path}: header field 'optimizer' lacks its kind or step")
    for name, value in header["optimizer"].get("hyper", {}).items():
        _check({name: value}, {name: _NUMBER}, "optimizer.hyper.", path)
    _check(header.get("training", {}), TRAINING, "training.", path)
    _check(header.get("rng", {}), RNG, "rng.", path)
    _check(header.get("data", {}), DATA, "data.", path)
    for name, value in header.get("metrics", {}).items():
        _check({name: value}, {name: _METRIC}, "metrics.", path)
    for name, entry in header["arrays"].items():
        _check({name: entry}, {name: _TABLE}, "arrays.", path)
        _check(entry, ARRAY, f"arrays.{name}.", path)
        if any(key not in entry for key in ARRAY):
            raise CheckpointRefused(f"{path}: header field 'arrays.{name}' lacks its dtype, shape or sha256")
    try:
        ModelDefinition.from_dict(header["model"], source=f"{path} (its header)")
    except PiBackpropError as error:
        raise CheckpointRefused(f"{path}: its model definition is not valid: {error}") from None


def _check(table: dict, fields: dict, prefix: str, path: Path) -> None:
    for key, (test, kind) in fields.items():
        if key in table and not test(table[key]):
            raise CheckpointRefused(f"{path}: header field {prefix + key!r} is {_shown(table[key])}, not {kind}; "
                                    "not a checkpoint pi-backprop wrote")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
