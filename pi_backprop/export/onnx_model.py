"""A model as an ONNX graph (opset ``OPSET``), written with the ``onnx`` package.

Input ``input``: float32 (N, C, H, W) for an image model, (N, features) otherwise, N free;
exactly the model's input (cropped, resized, grey, scaled to [0, 1] as the camera pipeline
makes it); weights float32 whatever the checkpoint's dtype. Outputs ``scores``: the last
layer's outputs (N, classes); ``confidences``: what ``pi-backprop predict`` calls
confidence, Softmax of the scores for a cross-entropy model, the scores clipped to [0, 1]
for an MSE (sigmoid) model. Metadata: ``classes`` (JSON list), ``definition`` (the model
definition as JSON), ``pi_backprop_version``, ``checkpoint_step``.

Layer by layer: Dense → Gemm (W is (in, out), so no transpose), Conv2D → Conv (symmetric
pads), MaxPool2D → MaxPool, AvgPool2D → AveragePool, GlobalAvgPool2D → GlobalAveragePool +
Flatten, Flatten → Flatten(axis 1) (C, H, W order, as ours), ReLU/Sigmoid/Tanh → the same,
Dropout → Identity (off at prediction).
"""

import json

import numpy as np

from ..exc import ConfigError
from ..nn import layers as L

OPSET = 13
INSTALL_HINT = "pip install 'pi-backprop[export]'"


def import_onnx():
    try:
        import onnx
    except Exception as error:   # noqa: BLE001 - missing, or broken (its protobuf): one line either way
        raise ConfigError(f"ONNX export needs the onnx package ({error}): {INSTALL_HINT}") from None
    return onnx


def model_proto(loaded):
    """The ``onnx.ModelProto`` of ``loaded`` (a ``LoadedModel``), checked by onnx's checker."""
    onnx = import_onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    definition = loaded.definition
    nodes, weights = [], []
    current = "input"

    def node(op, inputs, **attributes):
        nonlocal current
        name = f"{len(nodes)}_{op.lower()}"
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        current = name

    def weight(index, key, value):
        name = f"layer{index}.{key}"
        weights.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    for index, layer in enumerate(loaded.model.layers):
        p = layer.params
        if isinstance(layer, L.Dense):
            node("Gemm", [current, weight(index, "W", p["W"]), weight(index, "b", p["b"])])
        elif isinstance(layer, L.Conv2D):
            (ph, pw) = layer.padding
            node("Conv", [current, weight(index, "W", p["W"]), weight(index, "b", p["b"])],
                 kernel_shape=list(layer.kernel_size), strides=list(layer.stride), pads=[ph, pw, ph, pw])
        elif isinstance(layer, L.MaxPool2D):
            node("MaxPool", [current], kernel_shape=list(layer.pool_size), strides=list(layer.stride))
        elif isinstance(layer, L.AvgPool2D):
            node("AveragePool", [current], kernel_shape=list(layer.pool_size), strides=list(layer.stride))
        elif isinstance(layer, L.GlobalAvgPool2D):
            node("GlobalAveragePool", [current])
            node("Flatten", [current], axis=1)
        elif isinstance(layer, L.Flatten):
            node("Flatten", [current], axis=1)
        elif isinstance(layer, (L.ReLU, L.Sigmoid, L.Tanh)):
            node({L.ReLU: "Relu", L.Sigmoid: "Sigmoid", L.Tanh: "Tanh"}[type(layer)], [current])
        elif isinstance(layer, L.Dropout):
            node("Identity", [current])
        else:
            raise ConfigError(f"cannot export to ONNX: layer {index} ({type(layer).__name__}) has no ONNX form; "
                              "export --format npz writes its weights")
    nodes.append(helper.make_node("Identity", [current], ["scores"], name="scores"))
    if definition.loss == "mse":
        low = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
        high = numpy_helper.from_array(np.array(1.0, np.float32), "one")
        weights += [low, high]
        nodes.append(helper.make_node("Clip", ["scores", "zero", "one"], ["confidences"], name="confidences"))
    else:
        nodes.append(helper.make_node("Softmax", ["scores"], ["confidences"], name="confidences", axis=1))

    classes = len(definition.classes)
    graph = helper.make_graph(
        nodes, definition.name,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", *definition.input_shape])],
        [helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("confidences", onnx.TensorProto.FLOAT, ["N", classes])],
        initializer=weights)
    from .. import __version__
    model = helper.make_model(graph, producer_name="pi-backprop", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=f"{definition.name}: {', '.join(definition.classes)}")
    model.ir_version = min(model.ir_version, 8)   # onnxruntime builds of 2023 (bookworm's era) read IR 8
    helper.set_model_props(model, {"classes": json.dumps(list(definition.classes)),
                                   "definition": json.dumps(definition.to_dict()),
                                   "pi_backprop_version": __version__, "checkpoint_step": str(loaded.info.step)})
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:   # noqa: BLE001 - a bug of ours, said in one line with what to send
        raise ConfigError(f"the ONNX model of {definition.name} fails onnx's checker ({error}); "
                          "please report it with the model definition") from None
    return model


def onnx_bytes(loaded) -> bytes:
    return model_proto(loaded).SerializeToString()
