"""The numba backend's step driven op by op: ``kernels.run`` does everything but the ops
``kernels._callers`` names, which it hands back (NEED_CALLER) for this module to run on the
same workspace: dense products through ``blas`` (numpy's matmul), strided convolutions through
the engine's im2col kernels.

Why: from ``program.BLAS_MIN_MACS`` multiply-adds a step the products dominate, and BLAS
runs them faster than the hand loops (numba's own ``np.dot`` would need SciPy); the extra
calls then cost a few per cent. Strided convolutions are handed out so that their im2col
kernels stay out of ``run`` (seconds of compile time for everyone, for a rare layer) and
compile only when such a model is used.
"""

from . import blas
from . import kernels as kf
from . import opcodes as op
from .ops.conv import _conv_backward, _conv_forward


def run(x, labels, targets, P, G, WF, WI, loss_kind, opt_kind, buf1, buf2):
    """``kernels.run``'s arguments and contract (the mean loss, or a status code)."""
    WI[op.H_PC] = 0
    WI[op.H_OP_BY_OP] = 1
    try:
        value = kf.run(x, labels, targets, P, G, WF, WI, loss_kind, opt_kind, buf1, buf2)
        while value == op.NEED_CALLER and WF[op.S_STATUS] == op.NEED_CALLER:
            _run_handed_op(P, G, WF, WI)
            value = kf.run(x, labels, targets, P, G, WF, WI, loss_kind, opt_kind, buf1, buf2)
    finally:
        # at rest: a direct call starts a fresh step, and refuses strided programs (BAD_PROGRAM)
        WI[op.H_OP_BY_OP] = WI[op.H_PC] = 0
    return value


def _run_handed_op(P, G, WF, WI):
    """Run the op at WI[H_PC] (numbered as ``kernels.run`` says) and move on past it."""
    ops, N, A, D, X, cols_size, IDX, S = kf.views.py_func(WF, WI)
    N, L, pc = int(N), len(ops), int(WI[op.H_PC])
    backward = pc > L
    i = 2 * L - pc if backward else pc
    row = ops[i].tolist()
    kind, xo, yo = row[op.KIND], N * row[op.IN], N * row[op.OUT]
    I, O, wo, bo = row[op.C], row[op.F], row[op.WOFF], row[op.BOFF]
    if not backward and kind == op.DENSE:
        blas.dense_forward(A[xo:xo + N * I].reshape(N, I), P[wo:wo + I * O].reshape(I, O), P[bo:bo + O],
                           A[yo:yo + N * O].reshape(N, O))
    elif not backward:  # a strided convolution
        _conv_forward(A, xo, yo, X, N * row[op.COLS], P, wo, bo, N, *row[op.C:op.PW + 1])
    else:
        half = D.size // 2
        do = half * int(WI[op.H_HALF])
        dxo = half - do
        if kind == op.DENSE:
            blas.dense_backward(A[xo:xo + N * I].reshape(N, I), P[wo:wo + I * O].reshape(I, O),
                                D[do:do + N * O].reshape(N, O), G[wo:wo + I * O].reshape(I, O), G[bo:bo + O],
                                D[dxo:dxo + N * I].reshape(N, I) if i > 0 else None)
        else:
            _conv_backward(A, X, N * row[op.COLS], N * int(cols_size), P, wo, G, bo, D, do, dxo, N,
                              *row[op.C:op.PW + 1], i > 0)
        WI[op.H_HALF] = 1 - WI[op.H_HALF]  # both ops write dx into the other half
    WI[op.H_PC] = pc + 1
