"""The numba backend: the functions of ``kernels_numpy`` with the same signatures and results,
computed by compiled kernels.

The kernels (``_k_*``) are small, private and array-in/array-out: they write into buffers
the Python wrappers allocate, and trust their inputs (the layers validated them). Nothing
compiles at import: each kernel compiles on its first call, once per dtype, and is cached
on disk (``NUMBA_CACHE_DIR``). No SciPy: numba's ``np.dot`` would need it, so products are
hand loops in the kernels, or numpy's ``@`` (BLAS) in the wrappers where that is faster
(batches of ``BLAS_MIN_ROWS`` rows and more; see BENCHMARKS.md).

numba's cache checks only each function's own file: after editing a kernel here, clear the
cache (``rm -r ~/.cache/pi-backprop/numba``), or ``kernels_fused.run`` keeps the old copy.
"""

import functools

import numba
import numpy as np

# Every kernel of this package is compiled with these options (see also ``fused``).
# cache=True: compile once per machine, not per process. No parallel=True: it does not mix
# with cache=True, and threads do not pay at these sizes.
# error_model="numpy": x / 0 gives inf or NaN, as numpy does, instead of a check and a
# ZeroDivisionError per division, which kept every loop with a division from vectorising
# (Adam's update of 80k parameters: 145 µs, 16 µs without the checks).
jit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")
# For kernels whose inner loop is a sum (dot products, weight gradients): letting LLVM
# reorder the sum (as BLAS does) is what vectorises it. Never "nnan"/"ninf": the NaN checks
# and the divergence guard rely on NaN propagating.
jit_reduce = functools.partial(jit, fastmath={"reassoc", "contract"})
# For small helpers of other kernels: numba pastes their code into each caller. A helper
# compiled on its own is a library of its own, which LLVM optimises once alone and again in
# every caller it is linked into (~0.1-0.3 s each). The caller's fastmath flags apply, so
# only helpers without floating-point sums may be inlined into a jit_reduce kernel.
jit_inline = functools.partial(jit, inline="always")

# From this many rows on, BLAS's matmul beats the hand loops (measured, BENCHMARKS.md).
BLAS_MIN_ROWS = 16


@jit
def _k_zero(v):
    """v (1-D, contiguous) = 0; see _k_dense_backward for why not v[:] = 0."""
    for i in range(v.size):
        v[i] = 0


# -- dense --------------------------------------------------------------------------------

@jit
def _k_dense_forward(x, W, b, out):
    """out (N, O) = x (N, I) · W (I, O) + b (O,)."""
    N, I = x.shape
    O = W.shape[1]
    for n in range(N):
        for o in range(O):
            out[n, o] = b[o]
        for i in range(I):
            xi = x[n, i]
            for o in range(O):
                out[n, o] += xi * W[i, o]


@jit
def _k_dense_backward(delta, x, W, dW, db, dx):
    """dW = xᵀ·δ, db = Σ_n δ, dx = δ·Wᵀ (all overwritten)."""
    N, I = x.shape
    O = W.shape[1]
    # loops, not dW[:, :] = 0: numba's slice assignment costs seconds of compile time
    for i in range(I):
        for o in range(O):
            dW[i, o] = 0
    for o in range(O):
        db[o] = 0
    for n in range(N):
        for i in range(I):
            xi = x[n, i]
            for o in range(O):
                dW[i, o] += xi * delta[n, o]
        for o in range(O):
            db[o] += delta[n, o]
        for i in range(I):
            s = delta[n, 0] * W[i, 0]
            for o in range(1, O):
                s += delta[n, o] * W[i, o]
            dx[n, i] = s


def dense_forward(x, W, b):
    """net = x · W + b.   x (N, I), W (I, O), b (O,) -> (N, O)."""
    if x.shape[0] >= BLAS_MIN_ROWS:
        return x @ W + b
    out = np.empty((x.shape[0], W.shape[1]), dtype=x.dtype)
    _k_dense_forward(x, W, b, out)
    return out


def dense_backward(delta, x, W, dW, db):
    """Write ∂E/∂W = xᵀ · δ into ``dW`` and ∂E/∂b = Σ_n δ into ``db``; return δ · Wᵀ."""
    delta = np.ascontiguousarray(delta)
    if x.shape[0] >= BLAS_MIN_ROWS:
        np.matmul(x.T, delta, out=dW)
        np.sum(delta, axis=0, out=db)
        return delta @ W.T
    dx = np.empty(x.shape, dtype=delta.dtype)
    _k_dense_backward(delta, x, W, dW, db, dx)
    return dx


# -- activations (elementwise over the flattened array; f′ written with the output y) ------

@jit
def _k_relu_forward(z, y):
    for i in range(z.size):
        y[i] = z[i] if (z[i] > 0 or z[i] != z[i]) else 0  # NaN passes, as np.maximum


@jit
def _k_relu_backward(delta, y, out):
    for i in range(y.size):
        out[i] = delta[i] if y[i] > 0 else delta[i] * 0  # δ·0, so a NaN δ stays NaN as in numpy


@jit
def _k_sigmoid_forward(z, one, y):
    for i in range(z.size):
        y[i] = one / (one + np.exp(-z[i]))


@jit
def _k_sigmoid_backward(delta, y, one, out):
    for i in range(y.size):
        out[i] = delta[i] * y[i] * (one - y[i])


@jit
def _k_tanh_forward(z, y):
    for i in range(z.size):
        y[i] = np.tanh(z[i])


@jit
def _k_tanh_backward(delta, y, one, out):
    for i in range(y.size):
        out[i] = delta[i] * (one - y[i] * y[i])


def _elementwise(kernel, *arrays, with_one=False):
    # The constant 1 is passed in the arrays' dtype so that float32 stays float32 arithmetic
    # (a literal 1 would promote to float64 and round differently from numpy).
    flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    out = np.empty(arrays[-1].shape, dtype=arrays[-1].dtype)
    if with_one:
        flat.append(out.dtype.type(1))
    kernel(*flat, out.reshape(-1))
    return out


def relu_forward(z):
    return _elementwise(_k_relu_forward, z)


def relu_backward(delta, y):
    """δ ⊙ f′ with f′ = 1 where y > 0, else 0."""
    return _elementwise(_k_relu_backward, delta, y)


def sigmoid_forward(z):
    return _elementwise(_k_sigmoid_forward, z, with_one=True)


def sigmoid_backward(delta, y):
    """δ ⊙ y(1 − y)."""
    return _elementwise(_k_sigmoid_backward, delta, y, with_one=True)


def tanh_forward(z):
    return _elementwise(_k_tanh_forward, z)


def tanh_backward(delta, y):
    """δ ⊙ (1 − y²)."""
    return _elementwise(_k_tanh_backward, delta, y, with_one=True)


# -- convolution (im2col + BLAS for the products, compiled loops for the gathers) ---------

@jit
def _k_im2col(x, kh, kw, sh, sw, ph, pw, cols):
    """cols (N·OH·OW, C·kh·kw): one row per output position, zero where the patch is padding."""
    N, C, H, W = x.shape
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    row = 0
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                col = 0
                for c in range(C):
                    for i in range(kh):
                        ih = oh * sh + i - ph
                        for j in range(kw):
                            iw = ow * sw + j - pw
                            if 0 <= ih < H and 0 <= iw < W:
                                cols[row, col] = x[n, c, ih, iw]
                            else:
                                cols[row, col] = 0
                            col += 1
                row += 1


@jit
def _k_col2im(dcols, N, C, H, W, kh, kw, sh, sw, ph, pw, dx):
    """dx (N, C, H, W) = Σ over patches of dcols (N·OH·OW, C·kh·kw); padding dropped."""
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    _k_zero(dx.reshape(dx.size))
    row = 0
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                col = 0
                for c in range(C):
                    for i in range(kh):
                        ih = oh * sh + i - ph
                        for j in range(kw):
                            iw = ow * sw + j - pw
                            if 0 <= ih < H and 0 <= iw < W:
                                dx[n, c, ih, iw] += dcols[row, col]
                            col += 1
                row += 1


@jit
def _k_nhwc_to_nchw(rows, out):
    """rows (N·OH·OW, F) -> out (N, F, OH, OW)."""
    N, F, OH, OW = out.shape
    row = 0
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                for f in range(F):
                    out[n, f, oh, ow] = rows[row, f]
                row += 1


@jit
def _k_nchw_to_nhwc(delta, rows, db):
    """delta (N, F, OH, OW) -> rows (N·OH·OW, F); db (F,) = Σ over rows."""
    N, F, OH, OW = delta.shape
    for f in range(F):
        db[f] = 0
    for n in range(N):
        for f in range(F):
            acc = delta[n, f, 0, 0] * 0
            for oh in range(OH):
                for ow in range(OW):
                    value = delta[n, f, oh, ow]
                    rows[(n * OH + oh) * OW + ow, f] = value
                    acc += value
            db[f] += acc


def conv2d_forward(x, W, b, stride, padding):
    """Cross-correlation. x (N, C, H, W), W (F, C, kh, kw), b (F,), stride (sh, sw),
    padding (ph, pw) -> (y (N, F, OH, OW), cache for ``conv2d_backward``)."""
    F, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    N, _, H, W_ = x.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W_ + 2 * pw - kw) // sw + 1
    cols = np.empty((N * OH * OW, C * kh * kw), dtype=x.dtype)
    _k_im2col(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, cols)
    rows = cols @ W.reshape(F, -1).T + b
    y = np.empty((N, F, OH, OW), dtype=x.dtype)
    _k_nhwc_to_nchw(rows, y)
    return y, (cols, x.shape)


def conv2d_backward(delta, cache, W, dW, db, stride, padding):
    """∂E/∂w = Σ_positions ∂E/∂net · x(patch) into ``dW``, ∂E/∂b into ``db``; return ∂E/∂x."""
    cols, x_shape = cache
    F, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    N, _, OH, OW = delta.shape
    delta_rows = np.empty((N * OH * OW, F), dtype=delta.dtype)
    _k_nchw_to_nhwc(np.ascontiguousarray(delta), delta_rows, db)
    np.matmul(delta_rows.T, cols, out=dW.reshape(F, -1))
    dcols = delta_rows @ W.reshape(F, -1)
    dx = np.empty(x_shape, dtype=delta.dtype)
    _k_col2im(dcols, N, C, x_shape[2], x_shape[3], kh, kw, sh, sw, ph, pw, dx)
    return dx


# -- max pooling ---------------------------------------------------------------------------

@jit
def _k_maxpool_forward(x, kh, kw, sh, sw, y, argmax):
    """Ties go to the first maximum in row-major window order (as numpy's argmax)."""
    N, C, OH, OW = y.shape
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best = x[n, c, oh * sh, ow * sw]
                    where = 0
                    for i in range(kh):
                        for j in range(kw):
                            value = x[n, c, oh * sh + i, ow * sw + j]
                            # NaN wins, as in numpy's argmax.
                            if value > best or (value != value and best == best):
                                best = value
                                where = i * kw + j
                    y[n, c, oh, ow] = best
                    argmax[n, c, oh, ow] = where


@jit
def _k_maxpool_backward(delta, argmax, kw, sh, sw, dx):
    N, C, OH, OW = delta.shape
    _k_zero(dx.reshape(dx.size))
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    k = argmax[n, c, oh, ow]
                    dx[n, c, oh * sh + k // kw, ow * sw + k % kw] += delta[n, c, oh, ow]


def maxpool_forward(x, pool, stride):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax (N, C, OH, OW) int64 index in the window)."""
    (kh, kw), (sh, sw) = pool, stride
    N, C, H, W = x.shape
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int64)
    _k_maxpool_forward(np.ascontiguousarray(x), kh, kw, sh, sw, y, argmax)
    return y, argmax


def maxpool_backward(delta, argmax, x_shape, pool, stride):
    """Route each δ to the input that was the window's maximum; zero elsewhere."""
    (kh, kw), (sh, sw) = pool, stride
    dx = np.empty(x_shape, dtype=delta.dtype)
    _k_maxpool_backward(np.ascontiguousarray(delta), argmax, kw, sh, sw, dx)
    return dx


# -- optimizer updates on the flat parameter vector ----------------------------------------

@jit
def _k_sgd_update(p, g, velocity, lr, momentum, weight_decay):
    # Hyper-parameters arrive cast to the parameters' dtype: float32 arithmetic, as numpy's.
    for i in range(p.size):
        gi = g[i]
        if weight_decay != 0:
            gi = gi + weight_decay * p[i]
        if momentum != 0:
            velocity[i] = momentum * velocity[i] + gi
            gi = velocity[i]
        p[i] -= lr * gi


@jit
def _k_adam_update(p, g, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                   correction1, correction2, eps):
    for i in range(p.size):
        gi = g[i]
        m[i] = m[i] * beta1 + one_minus_beta1 * gi
        v[i] = v[i] * beta2 + one_minus_beta2 * gi * gi
        p[i] -= lr * (m[i] / correction1) / (np.sqrt(v[i] / correction2) + eps)


def sgd_update(p, g, velocity, lr, momentum, weight_decay):
    """PyTorch's SGD: g ← g + λp; v ← μv + g; p ← p − η·v (v is g itself when μ = 0)."""
    t = p.dtype.type
    _k_sgd_update(p, g, velocity, t(lr), t(momentum), t(weight_decay))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, step):
    """Adam (Kingma & Ba, alg. 1) with bias correction; ``step`` counts from 1."""
    t = p.dtype.type
    _k_adam_update(p, g, m, v, t(lr), t(beta1), t(1 - beta1), t(beta2), t(1 - beta2),
                   t(1 - beta1 ** step), t(1 - beta2 ** step), t(eps))
