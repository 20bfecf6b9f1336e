"""The backpropagation core: layers, losses, optimizers, ``Sequential``, gradcheck and the
two kernel backends. Pure numpy in, numpy out; knows nothing of files, hardware or time."""

from .backend import BACKENDS, get_backend, kernels, numba_available, set_backend
from .gradcheck import gradcheck
from .layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, Layer, MaxPool2D, ReLU, Sigmoid, Tanh
from .losses import MSELoss, SoftmaxCrossEntropy
from .optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer
from .sequential import Sequential

__all__ = [
    "BACKENDS", "get_backend", "kernels", "numba_available", "set_backend", "gradcheck",
    "Conv2D", "Dense", "Flatten", "Layer", "MaxPool2D", "ReLU", "Sigmoid", "Tanh",
    "MSELoss", "SoftmaxCrossEntropy", "OPTIMIZERS", "SGD", "Adam", "Optimizer", "Sequential",
    "AvgPool2D", "Dropout", "GlobalAvgPool2D", "AdamW",
]
