"""pi-backprop: train small dense and convolutional networks on a Raspberry Pi, in place.

    import pi_backprop as pb
    model = pb.load_model("sensor_mlp", seed=0)
    loss, opt = pb.SoftmaxCrossEntropy(), pb.Adam(model, lr=1e-3)
    value = model.train_step(x, t, loss, opt)

Importing this package imports no hardware library and compiles no kernel.
"""

__version__ = "0.2.0.dev0"

from .exc import PiBackpropError  # noqa: E402
from .modeldef import ModelDefinition, available_models, load_definition, load_model  # noqa: E402
from .nn import (  # noqa: E402
    SGD,
    Adam,
    AdamW,
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    MSELoss,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    get_backend,
    gradcheck,
    set_backend,
)

__all__ = [
    "__version__", "PiBackpropError", "ModelDefinition", "available_models", "load_definition",
    "load_model", "SGD", "Adam", "Conv2D", "Dense", "Flatten", "MaxPool2D", "MSELoss", "ReLU",
    "Sequential", "Sigmoid", "SoftmaxCrossEntropy", "Tanh", "get_backend", "gradcheck", "set_backend",
    "AdamW", "AvgPool2D", "Dropout", "GlobalAvgPool2D",
]
