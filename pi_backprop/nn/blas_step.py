"""The numba backend's op-by-op training step, for dense networks on batches where BLAS pays
and for networks with a strided convolution: the fused program's ops run one by one from
Python, dense products through numpy's matmul (BLAS), everything else (convolutions,
activations, loss, update) through ``kernels_fused``'s compiled op kernels, on the same
flat buffers and op rows as the fused call.

Why: from ~1.5M multiply-adds a step, the products dominate, and BLAS runs them faster than
numba's hand loops (numba's own ``np.dot`` would need SciPy); the dozen
Python-level calls then cost a few per cent. Below that, one fused call wins
(``fused.Program.prefers_blas`` decides; BENCHMARKS.md has the measurements).

Convolutional networks run fused (the fused stride-1 convolution reads the padded image in
place, and beat im2col + BLAS here at every batch size measured, 1 to 64), except those
with a strided convolution: its im2col kernels are left out of the fused call, where they
added 3 s to every first compile, and run here, compiled only when such a model is used.
"""

import numpy as np

from . import kernels_fused as kf
from .kernels_numba import _k_adam_update, _k_sgd_update


def run(x, labels, targets, P, G, WF, WI, loss_kind, opt_kind, buf1, buf2):
    """``kernels_fused.run``'s arguments and contract: the mean loss, or a status code (then
    nothing changed; S[S_STATUS] tells which); with ``FORWARD_ONLY`` the forward pass alone,
    returning 0."""
    ops, N, A, D, X, cols_size, IDX, S = kf._views.py_func(WF, WI)
    N, cols_size, use_labels = int(N), int(cols_size), labels.size > 0
    K = int(ops[-1, kf.OUT_SIZE])
    status = kf._inputs_bad(A, x, N, int(ops[0, kf.IN_SIZE]), labels, targets, use_labels, K,
                            opt_kind != kf.FORWARD_ONLY)
    S[kf.S_STATUS] = status
    if status != 0:
        return status
    one = S[kf.S_ONE]
    _forward(ops, N, A, X, cols_size, IDX, P, one)
    if opt_kind == kf.FORWARD_ONLY:
        return 0.0
    loss = kf._loss(loss_kind, A, N * int(ops[-1, kf.OUT]), N, K, labels, targets, use_labels, D,
                    S[kf.S_N], one)
    _backward(ops, N, A, X, cols_size, IDX, P, G, D, one)
    h = kf.S_HYPER
    if opt_kind == kf.SGD_UPDATE:
        _k_sgd_update(P, G, buf1, S[h], S[h + 1], S[h + 2])
    elif opt_kind == kf.ADAM_UPDATE:
        _k_adam_update(P, G, buf1, buf2, S[h], S[h + 1], S[h + 2], S[h + 3], S[h + 4], S[h + 5],
                       S[h + 6], S[h + 7])
    return loss


def _forward(ops, N, A, X, cols_size, IDX, P, one):
    for op in ops.tolist():
        kind, xo, yo = op[kf.KIND], N * op[kf.IN], N * op[kf.OUT]
        if kind == kf.DENSE:
            I, O, wo, bo = op[kf.C], op[kf.F], op[kf.WOFF], op[kf.BOFF]
            y = A[yo:yo + N * O].reshape(N, O)
            np.matmul(A[xo:xo + N * I].reshape(N, I), P[wo:wo + I * O].reshape(I, O), out=y)
            y += P[bo:bo + O]
        elif kind == kf.CONV and op[kf.SH] == op[kf.SW] == 1:
            kf._conv_forward_wide(A, xo, yo, X, N * op[kf.COLS], N * cols_size, P, op[kf.WOFF], op[kf.BOFF],
                                  N, *_conv_shape(op, strides=False))
        elif kind == kf.CONV:
            kf._conv_forward(A, xo, yo, X, N * op[kf.COLS], P, op[kf.WOFF], op[kf.BOFF], N,
                             *_conv_shape(op, strides=True))
        elif kind == kf.POOL:
            kf._pool_forward(A, xo, yo, IDX, N * op[kf.ARG], N, op[kf.C], op[kf.H], op[kf.W], op[kf.OH],
                             op[kf.OW], op[kf.KH], op[kf.KW], op[kf.SH], op[kf.SW])
        elif kind != kf.FLATTEN:
            kf._activation_forward(kind, A, xo, yo, N * op[kf.OUT_SIZE], one)


def _conv_shape(op, strides):
    """C, H, W, F, OH, OW, kh, kw, [sh, sw,] ph, pw of a convolution's op row (a list; the
    columns run in this order, see kernels_fused)."""
    if strides:
        return op[kf.C:kf.PW + 1]
    return op[kf.C:kf.KW + 1] + op[kf.PH:kf.PW + 1]


def _backward(ops, N, A, X, cols_size, IDX, P, G, D, one):
    """As ``kernels_fused.run``'s backward loop: δ starts in the first half of D; halves
    alternate."""
    half = D.size // 2
    do, dxo = 0, half
    rows = ops.tolist()
    for i in range(len(rows) - 1, -1, -1):
        op = rows[i]
        kind, xo, yo = op[kf.KIND], N * op[kf.IN], N * op[kf.OUT]
        need_dx = i > 0
        if kind == kf.DENSE:
            I, O, wo, bo = op[kf.C], op[kf.F], op[kf.WOFF], op[kf.BOFF]
            d = D[do:do + N * O].reshape(N, O)
            Wm = P[wo:wo + I * O].reshape(I, O)
            np.matmul(A[xo:xo + N * I].reshape(N, I).T, d, out=G[wo:wo + I * O].reshape(I, O))
            np.sum(d, axis=0, out=G[bo:bo + O])
            if need_dx:
                np.matmul(d, Wm.T, out=D[dxo:dxo + N * I].reshape(N, I))
        elif kind == kf.CONV and op[kf.SH] == op[kf.SW] == 1:
            kf._conv_backward_wide(X, N * op[kf.COLS], N * cols_size, P, op[kf.WOFF], G, op[kf.BOFF], D,
                                   do, dxo, N, *_conv_shape(op, strides=False), need_dx)
        elif kind == kf.CONV:
            kf._conv_backward(A, X, N * op[kf.COLS], N * cols_size, P, op[kf.WOFF], G, op[kf.BOFF], D,
                              do, dxo, N, *_conv_shape(op, strides=True), need_dx)
        elif kind == kf.POOL:
            if need_dx:
                kf._pool_backward(D, do, dxo, IDX, N * op[kf.ARG], N, op[kf.C], op[kf.H], op[kf.W],
                                  op[kf.OH], op[kf.OW], op[kf.KW], op[kf.SH], op[kf.SW])
        elif kind == kf.FLATTEN:
            continue
        else:
            if need_dx:
                kf._activation_backward(kind, A, yo, D, do, N * op[kf.OUT_SIZE], one)
            continue
        do, dxo = dxo, do
