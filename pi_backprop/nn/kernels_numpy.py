"""The numpy backend: the readable reference for every kernel.

Each function is the textbook formula. The numba backend (``engine.layer_kernels``) has the same
functions with the same signatures and results; the tests hold the two together.
Arguments are trusted: the layers validated shapes and dtypes before calling.

Notation: ``N`` batch, ``C`` channels, ``H, W`` height and width, ``F`` filters,
``kh, kw`` kernel size, ``sh, sw`` stride, ``OH, OW`` output size; ``dout`` is ∂E/∂(layer
output) coming back from the layer above.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# -- dense --------------------------------------------------------------------------------

def dense_forward(x, W, b):
    """net = x · W + b.   x (N, I), W (I, O), b (O,) -> (N, O)."""
    return x @ W + b


def dense_backward(dout, x, W, dW, db):
    """Write ∂E/∂W = xᵀ · δ into ``dW`` and ∂E/∂b = Σ_n δ into ``db``; return δ · Wᵀ.

    The return value is ∂E/∂x; the activation below multiplies it by f′ to make the
    hidden δ = (δ_next · W_nextᵀ) ⊙ f′(z).
    """
    np.matmul(x.T, dout, out=dW)
    np.sum(dout, axis=0, out=db)
    return dout @ W.T


# -- activations (f′ is written with the activation's output y) ---------------------------

def relu_forward(z):
    return np.maximum(z, 0)


def relu_backward(dout, y):
    """δ ⊙ f′ with f′ = 1 where y > 0, else 0."""
    return dout * (y > 0)


def sigmoid_forward(z):
    with np.errstate(over="ignore"):  # exp(-z) overflows to inf for z << 0: y is then 0, as it should be
        return 1 / (1 + np.exp(-z))


def sigmoid_backward(dout, y):
    """δ ⊙ y(1 − y)."""
    return dout * y * (1 - y)


def tanh_forward(z):
    return np.tanh(z)


def tanh_backward(dout, y):
    """δ ⊙ (1 − y²)."""
    return dout * (1 - y * y)


# -- convolution (im2col) -----------------------------------------------------------------

def _patches(x, kh, kw, sh, sw):
    """View of every kh×kw patch: (N, C, H, W) -> (N, C, OH, OW, kh, kw), no copy."""
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def conv2d_forward(x, W, b, stride, padding):
    """Cross-correlation, as every framework's "convolution".

    x (N, C, H, W), W (F, C, kh, kw), b (F,), stride (sh, sw), padding (ph, pw)
    -> (y (N, F, OH, OW), cache for ``conv2d_backward``).
    """
    F, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    x_padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    patches = _patches(x_padded, kh, kw, sh, sw)
    N, _, OH, OW = patches.shape[:4]
    # One row per output position, one column per weight: (N·OH·OW, C·kh·kw).
    cols = patches.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C * kh * kw)
    net = cols @ W.reshape(F, -1).T + b
    y = net.reshape(N, OH, OW, F).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y), (cols, x_padded.shape)


def conv2d_backward(dout, cache, W, dW, db, stride, padding):
    """∂E/∂w = Σ_positions ∂E/∂net · x(patch) into ``dW``, ∂E/∂b = Σ ∂E/∂net into ``db``;
    return ∂E/∂x of shape (N, C, H, W).

    dout (N, F, OH, OW) is ∂E/∂net for every output position.
    """
    cols, padded_shape = cache
    F, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    N, _, OH, OW = dout.shape
    dout_rows = dout.transpose(0, 2, 3, 1).reshape(N * OH * OW, F)
    dW[...] = (dout_rows.T @ cols).reshape(W.shape)
    np.sum(dout_rows, axis=0, out=db)
    # Each output position sends δ · w back to every input of its patch.
    dcols = (dout_rows @ W.reshape(F, -1)).reshape(N, OH, OW, C, kh, kw)
    dx_padded = np.zeros(padded_shape, dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            dx_padded[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw] += dcols[..., i, j].transpose(0, 3, 1, 2)
    H, W_ = padded_shape[2] - 2 * ph, padded_shape[3] - 2 * pw
    return dx_padded[:, :, ph:ph + H, pw:pw + W_]


# -- max pooling ---------------------------------------------------------------------------

def maxpool_forward(x, pool, stride):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax (N, C, OH, OW) int64 index in the window).

    Ties go to the first maximum in row-major window order.
    """
    (kh, kw), (sh, sw) = pool, stride
    windows = _patches(x, kh, kw, sh, sw)
    flat = windows.reshape(windows.shape[:4] + (kh * kw,))
    argmax = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    return y, argmax


def maxpool_backward(dout, argmax, x_shape, pool, stride):
    """Route each δ to the input that was the window's maximum; zero elsewhere."""
    (kh, kw), (sh, sw) = pool, stride
    N, C, OH, OW = dout.shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            routed = dout * (argmax == i * kw + j)
            dx[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw] += routed
    return dx


# -- optimizer updates on the flat parameter vector ----------------------------------------

def sgd_update(p, g, velocity, lr, momentum, weight_decay):
    """PyTorch's SGD: g ← g + λp; v ← μv + g; p ← p − η·v (v is g itself when μ = 0)."""
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        velocity *= momentum
        velocity += g
        g = velocity
    p -= lr * g


def adam_update(p, g, m, v, lr, beta1, beta2, eps, step):
    """Adam (Kingma & Ba, alg. 1) with bias correction; ``step`` counts from 1."""
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
