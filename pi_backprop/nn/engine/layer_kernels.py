"""The numba backend's layer-by-layer functions: ``kernels_numpy``'s signatures and results,
computed by the engine's op kernels, the same compiled code the fused step runs.

Each function lays its operands out in small flat buffers the way a fused step's workspace
holds them (input and output in one activation buffer, δ and dx in one delta buffer, W and
b in one parameter vector, offsets in elements) and calls the op kernel on them. The copies
this costs are the price of one set of compiled operations; the fused step, which every
supported ``Sequential`` uses, pays none of them. Dense products large enough for BLAS to
pay (``program.blas_pays``) go to ``blas``, as in the fused step.

Used by the layer API (``Layer.forward``/``backward``), gradient checks, and models the
fused step does not cover. Inputs were validated by the layers; nothing is checked here.
"""

import numpy as np

from . import blas
from . import opcodes as op
from .ops.augment import _augment_images
from .ops.conv import _conv_backward, _conv_backward_wide, _conv_forward, _conv_forward_wide
from .ops.dense import _dense_backward, _dense_forward
from .ops.elementwise import (
    _activation_backward,
    _activation_forward,
    _adam_update,
    _dropout_backward,
    _dropout_forward,
    _sgd_update,
)
from .ops.pool import _avgpool_backward, _avgpool_forward, _pool_backward, _pool_forward
from .program import blas_pays, conv_buffer_sizes


def _joined(dtype, *arrays):
    """One new 1-D buffer of ``dtype`` holding the arrays' elements one after another."""
    return np.concatenate([np.asarray(a, dtype).reshape(-1) for a in arrays])


def _buffer_with(x, extra):
    """A new 1-D buffer of x's dtype: x's elements, then room for ``extra`` more."""
    buffer = np.empty(x.size + extra, dtype=x.dtype)
    buffer[:x.size] = x.reshape(-1)
    return buffer


# -- dense --------------------------------------------------------------------------------

def dense_forward(x, W, b):
    """net = x · W + b.   x (N, I), W (I, O), b (O,) -> (N, O)."""
    (N, I), O = x.shape, W.shape[1]
    if blas_pays(N * I * O):
        return blas.dense_forward(x, W, b, np.empty((N, O), np.result_type(x, W, b)))
    A = _buffer_with(x, N * O)
    _dense_forward(A, 0, N * I, _joined(x.dtype, W, b), 0, I * O, N, I, O)
    return A[N * I:].reshape(N, O)


def dense_backward(dout, x, W, dW, db):
    """Write ∂E/∂W = xᵀ · δ into ``dW`` and ∂E/∂b = Σ_n δ into ``db``; return δ · Wᵀ."""
    (N, I), O = x.shape, W.shape[1]
    dout = np.ascontiguousarray(dout)
    if blas_pays(N * I * O):
        return blas.dense_backward(x, W, dout, dW, db, np.empty((N, I), np.result_type(dout, W)))
    G = np.empty(I * O + O, dtype=dout.dtype)
    D = _buffer_with(dout, N * I)
    scratch = np.empty(I * O, dtype=dout.dtype)  # Wᵀ
    _dense_backward(np.ascontiguousarray(x).reshape(-1), 0, np.ascontiguousarray(W).reshape(-1), 0,
                       G, I * O, D, 0, N * O, scratch, 0, N, I, O, True)
    dW[...] = G[:I * O].reshape(I, O)
    db[...] = G[I * O:]
    return D[N * O:].reshape(N, I)


# -- activations (elementwise; f′ written with the output y) ------------------------------

def _forward(kind, z):
    y = np.array(z, order="C")  # computed in place over a copy of z
    _activation_forward(kind, y.reshape(-1), 0, 0, y.size, y.dtype.type(1))
    return y


def _backward(kind, dout, y):
    dx = np.array(dout, order="C")  # δ ⊙ f′(y) in place over a copy of δ
    _activation_backward(kind, np.ascontiguousarray(y).reshape(-1), 0, dx.reshape(-1), 0, dx.size,
                         dx.dtype.type(1))
    return dx


def relu_forward(z):
    return _forward(op.RELU, z)


def relu_backward(dout, y):
    """δ ⊙ f′ with f′ = 1 where y > 0, else 0."""
    return _backward(op.RELU, dout, y)


def sigmoid_forward(z):
    return _forward(op.SIGMOID, z)


def sigmoid_backward(dout, y):
    """δ ⊙ y(1 − y)."""
    return _backward(op.SIGMOID, dout, y)


def tanh_forward(z):
    return _forward(op.TANH, z)


def tanh_backward(dout, y):
    """δ ⊙ (1 − y²)."""
    return _backward(op.TANH, dout, y)


# -- convolution ----------------------------------------------------------------------------

def _conv_shape(x_shape, W, stride, padding):
    """C, H, W, F, OH, OW, kh, kw, sh, sw, ph, pw: the columns C..PW of a convolution's op row."""
    _, C, H, W_ = x_shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    return C, H, W_, F, (H + 2 * ph - kh) // sh + 1, (W_ + 2 * pw - kw) // sw + 1, kh, kw, sh, sw, ph, pw


def conv2d_forward(x, W, b, stride, padding):
    """Cross-correlation. x (N, C, H, W), W (F, C, kh, kw), b (F,), stride (sh, sw),
    padding (ph, pw) -> (y (N, F, OH, OW), cache for ``conv2d_backward``)."""
    N = x.shape[0]
    C, H, W_, F, OH, OW, kh, kw, sh, sw, ph, pw = shape = _conv_shape(x.shape, W, stride, padding)
    region, scratch = conv_buffer_sizes((C, H, W_), (F, OH, OW), (kh, kw), stride, padding)
    A = _buffer_with(x, N * F * OH * OW)
    X = np.empty(N * region + scratch, dtype=x.dtype)
    P = _joined(x.dtype, W, b)
    if (sh, sw) == (1, 1):  # the fused step's stride-1 convolution, on padded images
        _conv_forward_wide(A, 0, x.size, X, 0, N * region, P, 0, W.size, N, C, H, W_, F, OH, OW,
                              kh, kw, ph, pw)
    else:  # im2col
        _conv_forward(A, 0, x.size, X, 0, P, 0, W.size, N, *shape)
    return A[x.size:].reshape(N, F, OH, OW), (A, X, N * region, x.shape)


def conv2d_backward(dout, cache, W, dW, db, stride, padding):
    """∂E/∂w = Σ_positions ∂E/∂net · x(patch) into ``dW``, ∂E/∂b into ``db``; return ∂E/∂x."""
    A, X, so, x_shape = cache
    N = x_shape[0]
    C, H, W_, F, OH, OW, kh, kw, sh, sw, ph, pw = shape = _conv_shape(x_shape, W, stride, padding)
    dout = np.ascontiguousarray(dout)
    D = _buffer_with(dout, N * C * H * W_)
    G = np.empty(W.size + F, dtype=dout.dtype)
    P = np.ascontiguousarray(W).reshape(-1)
    if (sh, sw) == (1, 1):
        _conv_backward_wide(X, 0, so, P, 0, G, W.size, D, 0, dout.size, N, C, H, W_, F, OH, OW,
                               kh, kw, ph, pw, True)
    else:
        _conv_backward(A, X, 0, so, P, 0, G, W.size, D, 0, dout.size, N, *shape, True)
    dW[...] = G[:W.size].reshape(W.shape)
    db[...] = G[W.size:]
    return D[dout.size:].reshape(x_shape)


# -- max pooling ---------------------------------------------------------------------------

def maxpool_forward(x, pool, stride):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax (N, C, OH, OW) int64 index in the window).
    Ties go to the first maximum in row-major window order (as numpy's argmax); NaN wins."""
    (kh, kw), (sh, sw) = pool, stride
    N, C, H, W = x.shape
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    A = _buffer_with(x, N * C * OH * OW)
    IDX = np.empty(N * C * OH * OW, dtype=np.int64)
    _pool_forward(A, 0, x.size, IDX, 0, N, C, H, W, OH, OW, kh, kw, sh, sw)
    return A[x.size:].reshape(N, C, OH, OW), IDX.reshape(N, C, OH, OW)


def maxpool_backward(dout, argmax, x_shape, pool, stride):
    """Route each δ to the input that was the window's maximum; zero elsewhere."""
    kw, (sh, sw) = pool[1], stride
    N, C, H, W = x_shape
    OH, OW = dout.shape[2:]
    D = _buffer_with(np.ascontiguousarray(dout), N * C * H * W)
    IDX = np.ascontiguousarray(argmax, dtype=np.int64).reshape(-1)
    _pool_backward(D, 0, dout.size, IDX, 0, N, C, H, W, OH, OW, kw, sh, sw)
    return D[dout.size:].reshape(x_shape)


# -- average pooling -----------------------------------------------------------------------

def avgpool_forward(x, pool, stride):
    """x (N, C, H, W) -> y (N, C, OH, OW): the mean of each kh×kw window."""
    (kh, kw), (sh, sw) = pool, stride
    N, C, H, W = x.shape
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    A = _buffer_with(x, N * C * OH * OW)
    _avgpool_forward(A, 0, x.size, N, C, H, W, OH, OW, kh, kw, sh, sw, x.dtype.type(1))
    return A[x.size:].reshape(N, C, OH, OW)


def avgpool_backward(dout, x_shape, pool, stride):
    """Each window's δ shared equally by its kh·kw inputs: dx = Σ_windows δ / (kh·kw)."""
    (kh, kw), (sh, sw) = pool, stride
    N, C, H, W = x_shape
    OH, OW = dout.shape[2:]
    D = _buffer_with(np.ascontiguousarray(dout), N * C * H * W)
    _avgpool_backward(D, 0, dout.size, N, C, H, W, OH, OW, kh, kw, sh, sw, D.dtype.type(1))
    return D[dout.size:].reshape(x_shape)


def global_avgpool_forward(x):
    """x (N, C, H, W) -> (N, C): the mean of each channel's plane (one window the plane's size)."""
    N, C, H, W = x.shape
    return avgpool_forward(x, (H, W), (1, 1)).reshape(N, C)


def global_avgpool_backward(dout, x_shape):
    """dout (N, C) -> dx (N, C, H, W) = δ / (H·W) everywhere in the plane."""
    N, C, H, W = x_shape
    return avgpool_backward(np.ascontiguousarray(dout).reshape(N, C, 1, 1), x_shape, (H, W), (1, 1))


# -- dropout -------------------------------------------------------------------------------

def dropout_forward(x, mask):
    """y = x ⊙ mask (inverted dropout: mask 0, or 1/(1 − p), of x's shape)."""
    A = _joined(x.dtype, x, mask, np.empty(x.size, x.dtype))
    _dropout_forward(A, 0, 2 * x.size, x.size, x.size, True)
    return A[2 * x.size:].reshape(x.shape)


def dropout_backward(dout, mask):
    """δ ⊙ mask."""
    dx = np.array(dout, order="C")
    _dropout_backward(np.ascontiguousarray(mask, dx.dtype).reshape(-1), 0, dx.reshape(-1), 0, dx.size)
    return dx


# -- image augmentation (nn.augment draws the numbers) ------------------------------------

def augment_images(x, u, settings, turn, mean, table):
    """As ``kernels_numpy.augment_images``: x (N, C, H, W) -> y of x's dtype."""
    y = np.empty_like(x)
    _augment_images(np.ascontiguousarray(x), y, u, settings, turn, mean, table)
    return y


# -- optimizer updates on the flat parameter vector ----------------------------------------

def sgd_update(p, g, velocity, lr, momentum, weight_decay):
    """PyTorch's SGD: g ← g + λp; v ← μv + g; p ← p − η·v (v is g itself when μ = 0)."""
    t = p.dtype.type
    _sgd_update(p, g, velocity, t(lr), t(momentum), t(weight_decay))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, step, decoupled_decay=0.0):
    """Adam (Kingma & Ba, alg. 1) with bias correction; ``step`` counts from 1. With
    ``decoupled_decay`` λ (AdamW, as PyTorch's): p ← p·(1 − ηλ) first."""
    t = p.dtype.type
    _adam_update(p, g, m, v, *(t(s) for s in op.adam_scalars(lr, beta1, beta2, eps, step)),
                 t(op.decay_factor(lr, decoupled_decay)))
