"""A model as plain arrays in an ``.npz``, readable with numpy alone (no pickle)::

    data = np.load("model.npz")
    definition = json.loads(str(data["definition"]))     # layers, input_shape, classes, loss
    W = data["layer0.W"]                                 # layer index, then the parameter

Parameters keep their shapes and the checkpoint's dtype (``dtype``: float32, or float64 for
a float64 run): Dense ``W`` (in, out) and ``b`` (out,), Conv2D ``W`` (out_channels,
in_channels, kh, kw) and ``b`` (out_channels,). Also ``classes`` (str array),
``checkpoint_step`` and ``format_version``.
"""

import io
import json

import numpy as np

FORMAT_VERSION = 1


def npz_bytes(loaded) -> bytes:
    definition = loaded.definition
    arrays = {"definition": np.array(json.dumps(definition.to_dict())),
              "classes": np.array(list(definition.classes)),
              "checkpoint_step": np.array(loaded.info.step, np.int64),
              "format_version": np.array(FORMAT_VERSION, np.int64),
              "dtype": np.array(np.dtype(loaded.model.dtype).name)}
    for index, layer in enumerate(loaded.model.layers):
        for key, value in layer.params.items():
            arrays[f"layer{index}.{key}"] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
