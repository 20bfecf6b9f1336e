"""Compile every numba kernel once, so that the service's first step does not wait for it.

``warmup_tasks(dtypes)`` lists what to compile as (label, callable) pairs; the caller runs
and times them (``pi-backprop warmup``). Each callable runs kernels on tiny inputs, which
compiles them into the keyed cache folder (``cache``) or loads them from there.
The signatures are those the layers and the fused step use: contiguous arrays of the
model dtype, int64 labels and arg-maxes.
"""

import numpy as np

from .. import layers as L
from ..backend import kernels
from ..losses import MSELoss, SoftmaxCrossEntropy
from ..optim import SGD, AdamW
from ..sequential import Sequential
from . import opcodes as op


def _layer_kernels(dtype):
    k = kernels("numba")
    rng = np.random.default_rng(0)

    def run():
        x = rng.normal(size=(2, 3)).astype(dtype)
        W, b = rng.normal(size=(3, 2)).astype(dtype), np.zeros(2, dtype)
        y = k.dense_forward(x, W, b)
        k.dense_backward(y, x, W, np.empty_like(W), np.empty_like(b))
        for name in ("relu", "sigmoid", "tanh"):
            out = getattr(k, f"{name}_forward")(x)
            getattr(k, f"{name}_backward")(x, out)
        image = rng.normal(size=(1, 2, 4, 4)).astype(dtype)
        Wc, bc = rng.normal(size=(2, 2, 3, 3)).astype(dtype), np.zeros(2, dtype)
        yc, cache = k.conv2d_forward(image, Wc, bc, (1, 1), (1, 1))
        k.conv2d_backward(yc, cache, Wc, np.empty_like(Wc), np.empty_like(bc), (1, 1), (1, 1))
        pooled, argmax = k.maxpool_forward(image, (2, 2), (2, 2))
        k.maxpool_backward(pooled, argmax, image.shape, (2, 2), (2, 2))
        averaged = k.avgpool_forward(image, (2, 2), (2, 2))
        k.avgpool_backward(averaged, image.shape, (2, 2), (2, 2))
        k.global_avgpool_backward(k.global_avgpool_forward(image), image.shape)
        mask = np.ones_like(image)
        k.dropout_backward(k.dropout_forward(image, mask), mask)
        draws, settings = np.full((1, len(op.DRAW_COLUMNS)), 0.5), np.zeros(op.AUG_SLOTS)   # augmentation: none
        k.augment_images(image[:1], draws, settings, np.array([[1.0, 0.0]]), np.zeros(1), np.zeros(image[0].size))
        p, g = rng.normal(size=4).astype(dtype), rng.normal(size=4).astype(dtype)
        k.sgd_update(p, g, np.zeros_like(p), 0.1, 0.9, 0.01)
        k.adam_update(p, g, np.zeros_like(p), np.zeros_like(p), 0.1, 0.9, 0.999, 1e-8, 1)
    return run


def _fused_step(dtype):
    from ..backend import get_backend, set_backend
    from .program import BLAS_MIN_MACS

    def run():
        # One network with every op kind of the fused call (the interpreter compiles once
        # per dtype), a dense one at a batch that takes the op-by-op BLAS path, and one with a
        # strided convolution, which runs op by op too (engine/op_by_op.py).
        cnn = Sequential([L.Conv2D(1, 2, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.AvgPool2D(1), L.Dropout(0.5),
                          L.Flatten(), L.Dense(8, 4), L.Tanh(), L.Dense(4, 3), L.Sigmoid()],
                         seed=0, dtype=dtype, input_shape=(1, 4, 4))
        mlp = Sequential([L.Dense(64, 32), L.ReLU(), L.Dense(32, 3)], seed=0, dtype=dtype)
        mlp_macs = 64 * 32 + 32 * 3  # multiply-adds per sample
        strided = Sequential([L.Conv2D(1, 2, 3, stride=2, padding=1), L.Flatten(), L.Dense(8, 3)],
                             seed=0, dtype=dtype, input_shape=(1, 4, 4))
        rng = np.random.default_rng(0)
        previous = get_backend()
        set_backend("numba")
        try:
            for model, batch in ((cnn, 2), (mlp, -(-BLAS_MIN_MACS // mlp_macs)), (strided, 2)):
                x = rng.normal(size=(batch,) + model.input_shape).astype(dtype)
                labels = np.arange(batch) % 3
                model.train_step(x, labels, SoftmaxCrossEntropy(), SGD(model, 0.1))
                model.train_step(x, np.eye(3, dtype=dtype)[labels], MSELoss(), AdamW(model))
                model.predict(x)
        finally:
            set_backend(previous)
    return run


def warmup_tasks(dtypes=(np.float32, np.float64)) -> list:
    """[(label, callable)]: calling each compiles (or loads from the cache) a group of kernels."""
    tasks = []
    for dtype in dtypes:
        name = np.dtype(dtype).name
        tasks.append((f"fused train_step and predict ({name})", _fused_step(dtype)))
        tasks.append((f"layer kernels ({name})", _layer_kernels(dtype)))
    return tasks
