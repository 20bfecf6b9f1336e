"""One compiled call per training step: an interpreter of the op-code program of
``program`` that runs forward, loss, backward and the optimizer update on flat buffers.

Why: a small network spends most of a layer-by-layer step calling kernels from Python
(dozens of calls a step, each costing as much as a small layer's arithmetic); here the
whole step is one call.

Buffers (all 1-D, batch-major, offsets in elements). A batch size's workspace is two
arrays, so that a call passes few arguments (numba unboxes each array argument anew):
    WI      int64: [header (HEADER slots, named H_* in ``opcodes``) | ops | IDX]
    WF      the model dtype: [S | A | D | X], where the header says each region starts and
            ends (``program.Program.workspace`` lays them out, aligned; ``views`` cuts them apart)
with (sizes per sample unless said otherwise)
    ops     int64 (L, NCOLS)   one row per layer, columns named in ``opcodes``
    IDX     int64: max-pool arg-maxes at N·ops[i, ARG]
    S       dtype scalars (S_SIZE): [N, 1, optimizer hyper-parameters (8), status of the last
            call, AdamW's decay factor, unused]
    A       activations (N·act_size): the input at 0, then each layer's output at N·ops[i, OUT];
            a dropout's mask at N·ops[i, MASK], written by the caller before a training step
    D       deltas: two halves of N·max_size, used in turn
    X       per convolution at N·ops[i, COLS] (N·cols_size in all): its im2col matrices, or for
            stride 1 its zero-padded images; then a per-batch scratch (dcols, or wide outputs/δ
            and a padded dx, or a dense layer's Wᵀ)
and, from the caller, P and G (the model's parameter and gradient vectors).

The op kernels (``ops``) are the engine's only compiled operations: ``run`` calls them for
the fused step, and ``layer_kernels`` for the numba backend's layer-by-layer functions, on
buffers it lays out per call.
"""

import numpy as np

from .jit import jit, jit_inline, jit_reduce
from .opcodes import (
    ADAM_UPDATE,
    ARG,
    AVGPOOL,
    BAD_INPUT,
    BAD_LABEL,
    BAD_PROGRAM,
    BAD_TARGET,
    BOFF,
    COLS,
    CONV,
    DENSE,
    DROPOUT,
    FLATTEN,
    FORWARD_ONLY,
    H_A,
    H_A_END,
    H_COLS,
    H_D,
    H_D_END,
    H_HALF,
    H_LAYERS,
    H_LOSS,
    H_N,
    H_OP_BY_OP,
    H_PC,
    H_X,
    HEADER,
    IN,
    IN_SIZE,
    KH,
    KIND,
    KW,
    MASK,
    NCOLS,
    NEED_CALLER,
    OH,
    OUT,
    OUT_SIZE,
    OW,
    PH,
    POOL,
    PW,
    S_DECAY,
    S_HYPER,
    S_N,
    S_ONE,
    S_SIZE,
    S_STATUS,
    SGD_UPDATE,
    SH,
    SW,
    WOFF,
    C,
    F,
    H,
    W,
)
from .ops.conv import _conv_backward_wide, _conv_forward_wide
from .ops.dense import _dense_backward, _dense_forward
from .ops.elementwise import (
    _activation_backward,
    _activation_forward,
    _adam_update,
    _dropout_backward,
    _dropout_forward,
    _loss,
    _sgd_update,
)
from .ops.pool import _avgpool_backward, _avgpool_forward, _pool_backward, _pool_forward


@jit_reduce
def _inputs_bad(A, x, N, in_size, labels, targets, use_labels, K, training):
    """Check before any work and copy x into A (scratch). Returns a status code or 0.0.
    Sizes first: a wrong one would read or write past the buffers (``program`` checks shapes,
    but this is the last line). v·0 is 0 for a finite v and NaN for NaN or ±inf, so a sum of
    them is one vectorised pass (a per-element isfinite with an early exit was a noticeable
    share of a small step)."""
    if x.size != N * in_size or N < 1:
        return BAD_INPUT
    if training and (labels.size != N if use_labels else targets.size != N * K):
        return BAD_LABEL if use_labels else BAD_TARGET
    nonfinite = x[0] * 0
    for k in range(x.size):
        v = x[k]
        A[k] = v
        nonfinite += v * 0
    if nonfinite != nonfinite:
        return BAD_INPUT
    if not training:
        return 0.0
    if use_labels:
        outside = False
        for n in range(labels.size):
            outside |= (labels[n] < 0) | (labels[n] >= K)
        if outside:
            return BAD_LABEL
    else:
        for k in range(targets.size):
            nonfinite += targets[k] * 0
        if nonfinite != nonfinite:
            return BAD_TARGET
    return 0.0


@jit_inline
def views(WF, WI):
    """(ops, N, A, D, X, cols_size, IDX, S) in the workspace WF, WI (module docstring).
    ``op_by_op`` runs this same code in Python (``views.py_func``)."""
    layers = WI[H_LAYERS]
    end = HEADER + layers * NCOLS
    return (WI[HEADER:end].reshape(layers, NCOLS), WI[H_N], WF[WI[H_A]:WI[H_A_END]],
            WF[WI[H_D]:WI[H_D_END]], WF[WI[H_X]:], WI[H_COLS], WI[end:], WF[:S_SIZE])


@jit_inline
def _callers(op):
    """True for an op the caller runs when it drives the step (op by op): dense products
    (through BLAS) and strided convolutions (their im2col kernels stay out of ``run``, where
    they would add seconds to every first compile)."""
    return op[KIND] == DENSE or (op[KIND] == CONV and (op[SH] != 1 or op[SW] != 1))


@jit
def run(x, labels, targets, P, G, WF, WI, loss_kind, opt_kind, buf1, buf2):
    """Forward, loss, backward, update for the batch x (N·input size,) with int labels (N,)
    or, if labels is empty, targets (N·K,). Returns the mean loss, or a status code (BAD_*)
    when an input is unusable: then nothing changed. S[S_STATUS] tells the two apart (0 after
    a step; a loss may be negative). Gradients are left in G exactly as the layers' backward
    would leave them.

    With opt_kind == FORWARD_ONLY: the forward pass alone (inference); outputs at
    A[N·ops[-1, OUT]:], returns 0. (One entry point, not two: each compiled entry point costs
    seconds of compile time on a Pi.)

    Op by op (WI[H_OP_BY_OP] set; ``op_by_op.run`` drives): at each op ``_callers`` names,
    the call returns NEED_CALLER with WI[H_PC] at that op; the caller runs it, moves WI[H_PC]
    on by one (and, in the backward pass, swaps WI[H_HALF]) and calls again. WI[H_PC] counts
    forward ops 0..L-1, the loss L, backward ops L+1..2L (op i at 2L - i); 0 starts a step.
    Without it, a strided convolution is refused (BAD_PROGRAM): its buffers are laid out for
    im2col, which only the caller runs.
    """
    ops, N, A, D, X, cols_size, IDX, S = views(WF, WI)
    L = ops.shape[0]
    use_labels = labels.size > 0
    last = ops[L - 1]
    K = last[OUT_SIZE]
    training = opt_kind != FORWARD_ONLY
    by_op = WI[H_OP_BY_OP] != 0
    pc = WI[H_PC]
    if pc == 0:
        status = _inputs_bad(A, x, N, ops[0, IN_SIZE], labels, targets, use_labels, K, training)
        for i in range(L):
            if not by_op and ops[i, KIND] == CONV and (ops[i, SH] != 1 or ops[i, SW] != 1):
                status = BAD_PROGRAM
        S[S_STATUS] = status
        if status != 0:
            return status
        WI[H_HALF] = 0
    one = S[S_ONE]
    # Forward and backward are loops here, not functions of their own: numba links a called
    # function's optimised code into the caller and LLVM optimises it all again, so every
    # level of calls between run and the op kernels costs seconds of compile time (no
    # faster at run time).
    for i in range(pc, L):  # forward
        op = ops[i]
        kind, xo, yo = op[KIND], N * op[IN], N * op[OUT]
        if by_op and _callers(op):
            WI[H_PC] = i
            S[S_STATUS] = NEED_CALLER
            return NEED_CALLER
        if kind == DENSE:
            _dense_forward(A, xo, yo, P, op[WOFF], op[BOFF], N, op[C], op[F])
        elif kind == CONV:  # stride 1 (strided convolutions are the caller's: op_by_op)
            _conv_forward_wide(A, xo, yo, X, N * op[COLS], N * cols_size, P, op[WOFF], op[BOFF], N,
                               op[C], op[H], op[W], op[F], op[OH], op[OW], op[KH], op[KW], op[PH], op[PW])
        elif kind == POOL:
            _pool_forward(A, xo, yo, IDX, N * op[ARG], N, op[C], op[H], op[W], op[OH], op[OW],
                          op[KH], op[KW], op[SH], op[SW])
        elif kind == AVGPOOL:
            _avgpool_forward(A, xo, yo, N, op[C], op[H], op[W], op[OH], op[OW], op[KH], op[KW], op[SH],
                             op[SW], one)
        elif kind == DROPOUT:
            _dropout_forward(A, xo, yo, N * op[MASK], N * op[OUT_SIZE], training)
        elif kind != FLATTEN:
            _activation_forward(kind, A, xo, yo, N * op[OUT_SIZE], one)
    if not training:
        WI[H_PC] = 0
        S[S_STATUS] = 0
        return 0.0
    loss = WI[H_LOSS:H_LOSS + 1].view(np.float64)  # float64 kept across a driven step's calls
    if pc <= L:
        loss[0] = _loss(loss_kind, A, N * last[OUT], N, K, labels, targets, use_labels, D, S[S_N], one)
        pc = L + 1
    # backward: ∂E/∂y is in D's first half; the halves swap at each op with weights or pooling;
    # ∂E/∂x of layer 0 is not computed. int64, not the literal 0: a literal would compile every
    # op kernel a second time.
    half = np.int64(D.size // 2)
    do = half * WI[H_HALF]
    dxo = half - do
    for i in range(2 * L - pc, -1, -1):
        op = ops[i]
        kind, xo, yo = op[KIND], N * op[IN], N * op[OUT]
        need_dx = i > 0
        if by_op and _callers(op):
            WI[H_PC] = 2 * L - i
            WI[H_HALF] = 1 if do != 0 else 0
            S[S_STATUS] = NEED_CALLER
            return NEED_CALLER
        if kind == DENSE:
            _dense_backward(A, xo, P, op[WOFF], G, op[BOFF], D, do, dxo, X, N * cols_size, N, op[C], op[F],
                            need_dx)
        elif kind == CONV:  # stride 1, as in the forward
            _conv_backward_wide(X, N * op[COLS], N * cols_size, P, op[WOFF], G, op[BOFF], D, do, dxo, N,
                                op[C], op[H], op[W], op[F], op[OH], op[OW], op[KH], op[KW], op[PH],
                                op[PW], need_dx)
        elif kind == POOL:
            if need_dx:
                _pool_backward(D, do, dxo, IDX, N * op[ARG], N, op[C], op[H], op[W], op[OH],
                               op[OW], op[KW], op[SH], op[SW])
        elif kind == AVGPOOL:
            if need_dx:
                _avgpool_backward(D, do, dxo, N, op[C], op[H], op[W], op[OH], op[OW], op[KH], op[KW],
                                  op[SH], op[SW], one)
        elif kind == FLATTEN:
            continue
        elif kind == DROPOUT:
            if need_dx:
                _dropout_backward(A, N * op[MASK], D, do, N * op[OUT_SIZE])
            continue
        else:
            if need_dx:
                _activation_backward(kind, A, yo, D, do, N * op[OUT_SIZE], one)
            continue
        do, dxo = dxo, do
    h = S_HYPER
    if opt_kind == SGD_UPDATE:
        _sgd_update(P, G, buf1, S[h], S[h + 1], S[h + 2])
    elif opt_kind == ADAM_UPDATE:
        _adam_update(P, G, buf1, buf2, S[h], S[h + 1], S[h + 2], S[h + 3], S[h + 4], S[h + 5],
                     S[h + 6], S[h + 7], S[S_DECAY])
    WI[H_PC] = 0
    S[S_STATUS] = 0
    return loss[0]
