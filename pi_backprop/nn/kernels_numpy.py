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

from .engine import opcodes as op

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


# -- average pooling -----------------------------------------------------------------------

def avgpool_forward(x, pool, stride):
    """x (N, C, H, W) -> y (N, C, OH, OW): the mean of each kh×kw window."""
    (kh, kw), (sh, sw) = pool, stride
    windows = _patches(x, kh, kw, sh, sw)
    return windows.sum(axis=(-2, -1)) / x.dtype.type(kh * kw)


def avgpool_backward(dout, x_shape, pool, stride):
    """Each window's δ shared equally by its kh·kw inputs: dx = Σ_windows δ / (kh·kw)."""
    (kh, kw), (sh, sw) = pool, stride
    N, C, OH, OW = dout.shape
    share = dout / dout.dtype.type(kh * kw)
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw] += share
    return dx


def global_avgpool_forward(x):
    """x (N, C, H, W) -> (N, C): the mean of each channel's plane."""
    return x.sum(axis=(2, 3)) / x.dtype.type(x.shape[2] * x.shape[3])


def global_avgpool_backward(dout, x_shape):
    """dout (N, C) -> dx (N, C, H, W) = δ / (H·W) everywhere in the plane."""
    share = dout / dout.dtype.type(x_shape[2] * x_shape[3])
    return np.ascontiguousarray(np.broadcast_to(share[:, :, None, None], x_shape))


# -- dropout -------------------------------------------------------------------------------

def dropout_forward(x, mask):
    """y = x ⊙ mask (inverted dropout: mask 0, or 1/(1 − p), of x's shape)."""
    return x * mask


def dropout_backward(dout, mask):
    """δ ⊙ mask."""
    return dout * mask


# -- image augmentation (nn.augment draws the numbers) ------------------------------------

def augment_images(x, u, settings, turn, mean, table):
    """x (N, C, H, W) -> y of x's dtype, each sample changed by the numbers of its row of
    ``u`` ((N, len(DRAW_COLUMNS)) float64 uniform in [0, 1), columns ``U_*``) within ``settings``
    (AUG_SLOTS,) float64 (the bounds, slots ``AUG_*``); turn (N, 2) the cosine and sine of
    each sample's angle; mean (N,) its mean; table float64 standard normal values.

    With shifts s = ⌊u·(2·shift + 1)⌋ − shift (rows and columns), zoom z = 1 + (2u − 1)·scale
    and the centre (cx, cy), output pixel (i, j) reads the input at column a·j + b·i + c and
    row d·j + e·i + f, clamped to the frame (bilinear where rotate or scale is set, else the
    whole pixel): a = e = cos/z, b = −d = sin/z, c = cx − a·cx − b·cy − s_cols,
    f = cy − a·cy + b·cx − s_rows; where hflip is set and u < 0.5, (a, b, c) ← (−a, −b, −c + W − 1).
    Then, in float64, v ← ((v − mean)·k_c + mean)·k_b + noise·table[o + k] with
    k_c, k_b = 1 + (2u − 1)·bound, o = ⌊u·(len(table) − C·H·W + 1)⌋, k the pixel's index in
    the sample."""
    N, C, H, W = x.shape
    shift = settings[op.AUG_SHIFT]
    rows = np.floor(u[:, op.U_SHIFT_ROWS] * (2 * shift + 1)) - shift
    cols = np.floor(u[:, op.U_SHIFT_COLS] * (2 * shift + 1)) - shift
    zoom = 1 + (2 * u[:, op.U_SCALE] - 1) * settings[op.AUG_SCALE]
    cy, cx = (H - 1) / 2, (W - 1) / 2
    a, b = turn[:, 0] / zoom, turn[:, 1] / zoom
    c, d, e, f = cx - a * cx - b * cy - cols, -b, a, cy - a * cy + b * cx - rows
    if settings[op.AUG_HFLIP] != 0:
        mirrored = u[:, op.U_HFLIP] < 0.5
        a, b, c = np.where(mirrored, -a, a), np.where(mirrored, -b, b), np.where(mirrored, -c + (W - 1), c)
    contrast = 1 + (2 * u[:, op.U_CONTRAST] - 1) * settings[op.AUG_CONTRAST]
    brightness = 1 + (2 * u[:, op.U_BRIGHTNESS] - 1) * settings[op.AUG_BRIGHTNESS]
    offsets = np.floor(u[:, op.U_NOISE] * (len(table) - C * H * W + 1)).astype(np.intp)

    j = np.arange(W, dtype=np.float64)[None, None, :]
    i = np.arange(H, dtype=np.float64)[None, :, None]
    at = [value[:, None, None] for value in (a, b, c, d, e, f)]
    col = np.minimum(np.maximum(at[0] * j + at[1] * i + at[2], 0.0), W - 1.0)   # (N, H, W)
    row = np.minimum(np.maximum(at[3] * j + at[4] * i + at[5], 0.0), H - 1.0)
    top, left = np.floor(row).astype(np.intp), np.floor(col).astype(np.intp)
    n = np.arange(N)[:, None, None]
    planes = x.transpose(1, 0, 2, 3)    # (C, N, H, W): one gather per channel
    if settings[op.AUG_ROTATE] != 0 or settings[op.AUG_SCALE] != 0:
        down, right = row - top, col - left
        bottom, rightmost = np.minimum(top + 1, H - 1), np.minimum(left + 1, W - 1)
        upper = planes[:, n, top, left] * (1 - right) + planes[:, n, top, rightmost] * right
        lower = planes[:, n, bottom, left] * (1 - right) + planes[:, n, bottom, rightmost] * right
        v = upper * (1 - down) + lower * down
    else:
        v = 1.0 * planes[:, n, top, left]
    v = v.transpose(1, 0, 2, 3)         # (N, C, H, W) again
    per_sample = (slice(None), None, None, None)
    v = ((v - mean[per_sample]) * contrast[per_sample] + mean[per_sample]) * brightness[per_sample]
    v = v + settings[op.AUG_NOISE] * table[offsets[:, None] + np.arange(C * H * W)].reshape(N, C, H, W)
    return v.astype(x.dtype)


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


def adam_update(p, g, m, v, lr, beta1, beta2, eps, step, decoupled_decay=0.0):
    """Adam (Kingma & Ba, alg. 1) with bias correction; ``step`` counts from 1. With
    ``decoupled_decay`` λ (AdamW, as PyTorch's): p ← p·(1 − ηλ) first."""
    if decoupled_decay:
        p *= p.dtype.type(1 - lr * decoupled_decay)
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)
