"""The numba backend against the numpy reference: every kernel over a table of shapes, the
fused training step against the layer-by-layer path, and whole float32 training runs.

Tolerances: the two backends add the same products in a different order (hand loops or
BLAS blocking against numpy's pairwise sums). A sum of K terms then differs by a few ulp of
its largest *term*, not of its result: an element near zero after cancellation has a large
relative error. So the absolute tolerance is scaled by the tensor's largest value:
float32 ulp 1.2e-7 x ~10 summed terms -> 2e-6 x scale; float64 ulp 2.2e-16 -> 1e-13 x scale.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import pi_backprop as pb  # noqa: E402
from pi_backprop.nn import kernels_numba as nb  # noqa: E402
from pi_backprop.nn import kernels_numpy as ref  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def close(actual, expected, dtype, factor=1.0):
    """allclose with rtol = TOL and atol = TOL x the largest |expected| (see the docstring)."""
    assert actual.dtype == expected.dtype == np.dtype(dtype)
    assert actual.shape == expected.shape
    tol = TOL[np.dtype(dtype).type] * factor
    scale = max(float(np.max(np.abs(expected))), 1.0) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- dense and activations ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, I, O", [(1, 1, 1), (1, 32, 64), (3, 5, 7), (15, 9, 4), (16, 33, 10), (40, 7, 3)])
def test_dense(rng, dtype, N, I, O):
    x, W, b = (rng.normal(size=s).astype(dtype) for s in [(N, I), (I, O), (O,)])
    delta = rng.normal(size=(N, O)).astype(dtype)
    close(nb.dense_forward(x, W, b), ref.dense_forward(x, W, b), dtype)
    grads = {}
    for name, module in (("nb", nb), ("ref", ref)):
        dW, db = np.full((I, O), np.nan, dtype), np.full(O, np.nan, dtype)
        dx = module.dense_backward(delta, x, W, dW, db)
        grads[name] = (dx, dW, db)
    for actual, expected in zip(grads["nb"], grads["ref"]):
        close(actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 3, 4, 5)])
def test_activations(rng, dtype, name, shape):
    z = (3 * rng.normal(size=shape)).astype(dtype)
    z.flat[0] = 0  # relu's kink
    if z.size > 1:
        z.flat[1] = -200  # sigmoid's exp overflow
    delta = rng.normal(size=shape).astype(dtype)
    y = getattr(nb, f"{name}_forward")(z)
    close(y, getattr(ref, f"{name}_forward")(z), dtype)
    close(getattr(nb, f"{name}_backward")(delta, y), getattr(ref, f"{name}_backward")(delta, y), dtype)


# -- convolution and pooling --------------------------------------------------------------

CONV_CASES = [
    # (N, C, H, W), F, (kh, kw), (sh, sw), (ph, pw)
    ((1, 1, 5, 5), 2, (3, 3), (1, 1), (0, 0)),
    ((2, 3, 6, 5), 4, (3, 2), (1, 1), (1, 1)),
    ((2, 2, 7, 7), 3, (3, 3), (2, 2), (0, 0)),
    ((1, 2, 6, 8), 2, (2, 3), (2, 1), (2, 2)),
    ((3, 1, 4, 4), 1, (1, 1), (1, 1), (0, 0)),
    ((2, 2, 5, 6), 3, (3, 3), (2, 2), (1, 2)),
    ((1, 1, 28, 28), 8, (3, 3), (1, 1), (1, 1)),
    ((17, 8, 14, 14), 16, (3, 3), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, F, kernel, stride, padding", CONV_CASES)
def test_conv2d(rng, dtype, shape, F, kernel, stride, padding):
    x = rng.normal(size=shape).astype(dtype)
    W = rng.normal(size=(F, shape[1]) + kernel).astype(dtype)
    b = rng.normal(size=F).astype(dtype)
    y, cache = nb.conv2d_forward(x, W, b, stride, padding)
    y_ref, cache_ref = ref.conv2d_forward(x, W, b, stride, padding)
    close(y, y_ref, dtype)
    delta = rng.normal(size=y.shape).astype(dtype)
    results = []
    for module, c in ((nb, cache), (ref, cache_ref)):
        dW, db = np.full(W.shape, np.nan, dtype), np.full(F, np.nan, dtype)
        results.append((module.conv2d_backward(delta, c, W, dW, db, stride, padding), dW, db))
    for actual, expected in zip(*results):
        close(actual, expected, dtype)


POOL_CASES = [
    # (N, C, H, W), pool, stride
    ((2, 2, 4, 4), (2, 2), (2, 2)),
    ((1, 3, 5, 7), (2, 3), (2, 3)),
    ((2, 1, 6, 6), (3, 3), (2, 2)),   # overlapping windows
    ((1, 2, 5, 5), (2, 2), (1, 1)),   # overlapping, stride 1
    ((3, 4, 28, 28), (2, 2), (2, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape, pool, stride", POOL_CASES)
def test_maxpool(rng, dtype, ties, shape, pool, stride):
    # With ties, values come from {0, 1, 2}: most windows hold several equal maxima, and the
    # first in row-major window order must win in both backends.
    x = (rng.integers(0, 3, size=shape) if ties else rng.normal(size=shape)).astype(dtype)
    y, argmax = nb.maxpool_forward(x, pool, stride)
    y_ref, argmax_ref = ref.maxpool_forward(x, pool, stride)
    close(y, y_ref, dtype)
    assert argmax.dtype == argmax_ref.dtype
    np.testing.assert_array_equal(argmax, argmax_ref)
    delta = rng.normal(size=y.shape).astype(dtype)
    close(nb.maxpool_backward(delta, argmax, x.shape, pool, stride),
          ref.maxpool_backward(delta, argmax_ref, x.shape, pool, stride), dtype)


# -- optimizer updates ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 1e-2), (0.9, 5e-4)])
def test_sgd_update(rng, dtype, momentum, weight_decay):
    p0, g = (rng.normal(size=101).astype(dtype) for _ in range(2))
    states = []
    for module in (nb, ref):
        p, v = p0.copy(), np.zeros_like(p0)
        for _ in range(3):
            module.sgd_update(p, g, v, 0.1, momentum, weight_decay)
        states.append((p, v))
    for actual, expected in zip(*states):
        close(actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update(rng, dtype):
    p0 = rng.normal(size=101).astype(dtype)
    states = []
    for module in (nb, ref):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step in range(1, 5):
            g = np.sin(p * step)  # a gradient that depends on the parameters
            module.adam_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, step)
        states.append((p, m, v))
    for actual, expected in zip(*states):
        close(actual, expected, dtype)


# -- import hygiene and the warm-up command ------------------------------------------------

def test_import_pi_backprop_does_not_import_numba():
    code = "import sys, pi_backprop; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
