"""One compiled call per training step: an interpreter of the op-code program of
``fused.py`` that runs forward, loss, backward and the optimizer update on flat buffers.

Why: a small network spends most of a layer-by-layer step calling kernels from Python
(~1 µs a call, dozens per step); here the whole step is one call. The products are hand
loops (numba's ``np.dot`` would need SciPy), written so that the innermost loop runs over
contiguous memory and LLVM vectorises it.

Buffers (all 1-D, batch-major, offsets in elements). A batch size's workspace is two
arrays, so that a call passes few arguments (numba unboxes each array argument, ~40 ns):
    WI      int64: [header (HEADER slots, named H_* below) | ops | IDX]
    WF      the model dtype: [S | A | D | X], where the header says each region starts and
            ends (``fused.Program.workspace`` lays them out, aligned; ``_views`` cuts them apart)
with (sizes per sample unless said otherwise)
    ops     int64 (L, NCOLS)   one row per layer, columns named below
    IDX     int64: max-pool arg-maxes at N·ops[i, ARG]
    S       dtype scalars (S_SIZE): [N, 1, optimizer hyper-parameters (8), status of the last
            call, unused]
    A       activations (N·act_size): the input at 0, then each layer's output at N·ops[i, OUT]
    D       deltas: two halves of N·max_size, used in turn
    X       per convolution at N·ops[i, COLS] (N·cols_size in all): its im2col matrices, or for
            stride 1 its zero-padded images; then a per-batch scratch (dcols, or wide outputs/δ
            and a padded dx, or a dense layer's Wᵀ)
and, from the caller, P and G (the model's parameter and gradient vectors).
"""

import numpy as np

from .kernels_numba import _k_adam_update, _k_sgd_update, jit, jit_inline, jit_reduce

# op kinds
DENSE, CONV, POOL, FLATTEN, RELU, SIGMOID, TANH = 1, 2, 3, 4, 5, 6, 7
# columns of an op row
KIND, IN, OUT, IN_SIZE, OUT_SIZE, WOFF, BOFF, C, H, W, F, OH, OW, KH, KW, SH, SW, PH, PW, ARG, COLS = range(21)
NCOLS = 21
# losses, optimizers
SOFTMAX_CE, MSE = 0, 1
FORWARD_ONLY, NO_UPDATE, SGD_UPDATE, ADAM_UPDATE = -1, 0, 1, 2
# status codes: returned instead of the loss and set in S[S_STATUS] (a loss can be negative:
# cross-entropy takes any finite targets, so a negative return alone is not an error)
BAD_INPUT, BAD_LABEL, BAD_TARGET, BAD_PROGRAM = -1.0, -2.0, -3.0, -4.0
# scalar slots in S: N, 1, optimizer hyper-parameters (8), status
S_N, S_ONE, S_HYPER, S_STATUS = 0, 1, 2, 10
S_SIZE = 16
# slots of WI's header: batch size, layers, cols_size (per sample), and where A and D start
# and end and X starts in WF (X runs to WF's end)
H_N, H_LAYERS, H_COLS, H_A, H_A_END, H_D, H_D_END, H_X = range(8)
HEADER = 8


# -- forward ops --------------------------------------------------------------------------
# Each op takes views of its operands first: loops indexed by range() variables over views
# vectorise, where the same loops over offsets into the flat buffers do not (numba must
# allow for negative indices there).

@jit
def _dense_forward(A, xo, yo, P, wo, bo, N, I, O):
    x = A[xo:xo + N * I].reshape(N, I)
    y = A[yo:yo + N * O].reshape(N, O)
    Wm = P[wo:wo + I * O].reshape(I, O)
    b = P[bo:bo + O]
    for n in range(N):
        for o in range(O):
            y[n, o] = b[o]
    # Four samples by four rows of W per pass over y: each load of W feeds four samples,
    # each load and store of y four rows, and a pass's set-up (alias checks, broadcasts)
    # is paid once per sixteen multiply-adds per output, not four.
    n = 0
    while n + 4 <= N:
        y0, y1, y2, y3 = y[n], y[n + 1], y[n + 2], y[n + 3]
        x0, x1, x2, x3 = x[n], x[n + 1], x[n + 2], x[n + 3]
        i = 0
        while i + 4 <= I:
            a0, a1, a2, a3 = x0[i], x0[i + 1], x0[i + 2], x0[i + 3]
            b0, b1, b2, b3 = x1[i], x1[i + 1], x1[i + 2], x1[i + 3]
            c0, c1, c2, c3 = x2[i], x2[i + 1], x2[i + 2], x2[i + 3]
            d0, d1, d2, d3 = x3[i], x3[i + 1], x3[i + 2], x3[i + 3]
            W0, W1, W2, W3 = Wm[i], Wm[i + 1], Wm[i + 2], Wm[i + 3]
            for o in range(O):
                w0, w1, w2, w3 = W0[o], W1[o], W2[o], W3[o]
                y0[o] += a0 * w0 + a1 * w1 + a2 * w2 + a3 * w3
                y1[o] += b0 * w0 + b1 * w1 + b2 * w2 + b3 * w3
                y2[o] += c0 * w0 + c1 * w1 + c2 * w2 + c3 * w3
                y3[o] += d0 * w0 + d1 * w1 + d2 * w2 + d3 * w3
            i += 4
        for i in range(i, I):
            a, b_, c, d, Wi = x0[i], x1[i], x2[i], x3[i], Wm[i]
            for o in range(O):
                w = Wi[o]
                y0[o] += a * w
                y1[o] += b_ * w
                y2[o] += c * w
                y3[o] += d * w
        n += 4
    # The last N mod 4 samples: four rows of W at a time, so that y is loaded and stored
    # once per four rows, not once per row (W3's first layer at batch 1: 3.3 µs, not 4.8).
    for n in range(n, N):
        yn, xn = y[n], x[n]
        i = 0
        while i + 4 <= I:
            x0, x1, x2, x3 = xn[i], xn[i + 1], xn[i + 2], xn[i + 3]
            W0, W1, W2, W3 = Wm[i], Wm[i + 1], Wm[i + 2], Wm[i + 3]
            for o in range(O):
                yn[o] += x0 * W0[o] + x1 * W1[o] + x2 * W2[o] + x3 * W3[o]
            i += 4
        for i in range(i, I):
            xi, Wi = xn[i], Wm[i]
            for o in range(O):
                yn[o] += xi * Wi[o]


@jit_inline
def _zero(v):
    """v (1-D) = 0. A loop, not ``v[:] = 0``: numba's generic slice assignment compiles
    for seconds per array type, and every second counts on a Pi."""
    for k in range(v.size):
        v[k] = 0


@jit_inline
def _valid_range(OW, sw, j, pw, W):
    """Output columns ow whose input column ow·sw + j − pw lies inside [0, W)."""
    lo = 0 if j >= pw else (pw - j + sw - 1) // sw
    last = W - 1 + pw - j
    hi = 0 if last < 0 else min(OW, last // sw + 1)
    return lo, max(lo, hi)


@jit
def _im2col(x, kh, kw, sh, sw, ph, pw, cols):
    """cols (C·kh·kw, OH·OW) for one image x (C, H, W): row k = (c, i, j) holds the input
    under weight (c, i, j) at every output position (0 in the padding)."""
    C, H, W = x.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    k = 0
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                row = cols[k]
                lo, hi = _valid_range(OW, sw, j, pw, W)
                for oh in range(OH):
                    ih = oh * sh + i - ph
                    out = row[oh * OW:(oh + 1) * OW]
                    # explicit loops: numba's slice fill out[a:b] = 0 costs ~10 ns a call
                    if ih < 0 or ih >= H:
                        for q in range(OW):
                            out[q] = 0
                        continue
                    for q in range(lo):
                        out[q] = 0
                    for q in range(hi, OW):
                        out[q] = 0
                    src = x[c, ih, lo * sw + j - pw:]
                    if sw == 1:  # contiguous: a vectorised copy (stride 1 is the common case)
                        for q in range(hi - lo):
                            out[lo + q] = src[q]
                    else:
                        for q in range(hi - lo):
                            out[lo + q] = src[q * sw]
                k += 1


@jit
def _conv_forward(A, xo, yo, X, co, P, wo, bo, N, C, H, W, F, OH, OW, kh, kw, sh, sw, ph, pw):
    """y_n (F, OH·OW) = W (F, K) · cols_n (K, OH·OW) + b: the inner loop runs over all
    output positions of a plane, long and contiguous. cols_n stays in X for backward."""
    K, Q = C * kh * kw, OH * OW
    x = A[xo:xo + N * C * H * W].reshape(N, C, H, W)
    y = A[yo:yo + N * F * Q].reshape(N, F, Q)
    cols = X[co:co + N * K * Q].reshape(N, K, Q)
    Wk = P[wo:wo + F * K].reshape(F, K)
    b = P[bo:bo + F]
    for n in range(N):
        _im2col(x[n], kh, kw, sh, sw, ph, pw, cols[n])
        for f in range(F):
            yf, Wf, bf = y[n, f], Wk[f], b[f]
            for q in range(Q):
                yf[q] = bf
            for k in range(K):
                w, ck = Wf[k], cols[n, k]
                for q in range(Q):
                    yf[q] += w * ck[q]


@jit
def _pool_forward(A, xo, yo, IDX, ao, N, C, H, W, OH, OW, kh, kw, sh, sw):
    x = A[xo:xo + N * C * H * W].reshape(N * C, H, W)
    y = A[yo:yo + N * C * OH * OW].reshape(N * C, OH, OW)
    arg = IDX[ao:ao + N * C * OH * OW].reshape(N * C, OH, OW)
    for nc in range(N * C):
        if kh == 2 and kw == 2 and sh == 2 and sw == 2:
            if not _pool_plane_2x2(x[nc], y[nc], arg[nc]):
                continue  # else a NaN: redo the plane with numpy's NaN rule
        _pool_plane(x[nc], kh, kw, sh, sw, y[nc], arg[nc])


@jit_inline
def _pool_plane_2x2(x, y, arg):
    """2x2 windows, stride 2: compare-and-select without branches, which random data would
    mispredict half the time (8x slower). Returns True when x holds a NaN (result unusable)."""
    OH, OW = y.shape
    nan = False
    for oh in range(OH):
        r0, r1, yr, ar = x[2 * oh], x[2 * oh + 1], y[oh], arg[oh]
        for ow in range(OW):
            a, b, c, d = r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]
            best, where = a, 0
            if b > best:
                best, where = b, 1
            if c > best:
                best, where = c, 2
            if d > best:
                best, where = d, 3
            nan |= (a != a) | (b != b) | (c != c) | (d != d)
            yr[ow] = best
            ar[ow] = where
    return nan


@jit_inline
def _pool_plane(x, kh, kw, sh, sw, y, arg):
    OH, OW = y.shape
    for oh in range(OH):
        for ow in range(OW):
            best = x[oh * sh, ow * sw]
            where = 0
            for i in range(kh):
                for j in range(kw):
                    value = x[oh * sh + i, ow * sw + j]
                    # first maximum in row-major order wins; NaN wins, as numpy's argmax
                    if value > best or (value != value and best == best):
                        best = value
                        where = i * kw + j
            y[oh, ow] = best
            arg[oh, ow] = where


@jit
def _activation_forward(kind, A, xo, yo, size, one):
    x = A[xo:xo + size]
    y = A[yo:yo + size]
    if kind == RELU:
        for k in range(size):
            z = x[k]
            y[k] = z if (z > 0 or z != z) else 0
    elif kind == SIGMOID:
        for k in range(size):
            y[k] = one / (one + np.exp(-x[k]))
    else:
        for k in range(size):
            y[k] = np.tanh(x[k])


# -- loss ---------------------------------------------------------------------------------

@jit
def _loss(kind, A, yo, N, K, labels, targets, use_labels, D, count, one):
    """Mean loss over the batch (float64); ∂L/∂y into D[:N·K]. Formulas as in ``losses.py``."""
    y = A[yo:yo + N * K].reshape(N, K)
    d = D[:N * K].reshape(N, K)
    total = 0.0
    zero = one - one
    for n in range(N):
        yn, dn = y[n], d[n]
        if kind == SOFTMAX_CE:
            top = yn[0]
            for k in range(1, K):
                top = max(top, yn[k])
            s = zero
            for k in range(K):
                s += np.exp(yn[k] - top)
            log_sum = np.log(s)
            # Σt per row: 1 for labels; real targets need not sum to 1 (see losses.py).
            t_sum = one
            if not use_labels:
                t_sum = zero
                for k in range(K):
                    t_sum += targets[n * K + k]
            for k in range(K):
                log_prob = (yn[k] - top) - log_sum
                t = (one if labels[n] == k else zero) if use_labels else targets[n * K + k]
                total -= t * log_prob
                dn[k] = (np.exp(log_prob) * t_sum - t) / count
        else:
            for k in range(K):
                t = (one if labels[n] == k else zero) if use_labels else targets[n * K + k]
                diff = yn[k] - t
                total += 0.5 * diff * diff
                dn[k] = diff / count
    return total / N


# -- backward ops -------------------------------------------------------------------------

@jit_reduce
def _dense_backward(A, xo, P, wo, G, bo, D, do, dxo, X, so, N, I, O, need_dx):
    """dW = xᵀ·δ, db = Σ_n δ, and if need_dx, dx = δ·Wᵀ; X[so:] is scratch for Wᵀ."""
    x = A[xo:xo + N * I].reshape(N, I)
    Wm = P[wo:wo + I * O].reshape(I, O)
    dW = G[wo:wo + I * O].reshape(I, O)
    db = G[bo:bo + O]
    d = D[do:do + N * O].reshape(N, O)
    dx = D[dxo:dxo + N * I].reshape(N, I)
    # dW = xᵀ·δ four samples by four rows of dW per pass (as in _dense_forward): one pass
    # over dW per four samples. The first pass writes, the others add: no zeroing pass (at
    # batch 1 that halved W3's first layer).
    n = 0
    while n + 4 <= N:
        d0, d1, d2, d3 = d[n], d[n + 1], d[n + 2], d[n + 3]
        x0, x1, x2, x3 = x[n], x[n + 1], x[n + 2], x[n + 3]
        i = 0
        while i + 4 <= I:
            a0, a1, a2, a3 = x0[i], x1[i], x2[i], x3[i]
            b0, b1, b2, b3 = x0[i + 1], x1[i + 1], x2[i + 1], x3[i + 1]
            c0, c1, c2, c3 = x0[i + 2], x1[i + 2], x2[i + 2], x3[i + 2]
            f0, f1, f2, f3 = x0[i + 3], x1[i + 3], x2[i + 3], x3[i + 3]
            r0, r1, r2, r3 = dW[i], dW[i + 1], dW[i + 2], dW[i + 3]
            first = n == 0
            for o in range(O):
                e0, e1, e2, e3 = d0[o], d1[o], d2[o], d3[o]
                g0 = a0 * e0 + a1 * e1 + a2 * e2 + a3 * e3
                g1 = b0 * e0 + b1 * e1 + b2 * e2 + b3 * e3
                g2 = c0 * e0 + c1 * e1 + c2 * e2 + c3 * e3
                g3 = f0 * e0 + f1 * e1 + f2 * e2 + f3 * e3
                if first:
                    r0[o], r1[o], r2[o], r3[o] = g0, g1, g2, g3
                else:
                    r0[o] += g0
                    r1[o] += g1
                    r2[o] += g2
                    r3[o] += g3
            i += 4
        for i in range(i, I):
            a0, a1, a2, a3, dWi = x0[i], x1[i], x2[i], x3[i], dW[i]
            if n == 0:
                for o in range(O):
                    dWi[o] = a0 * d0[o] + a1 * d1[o] + a2 * d2[o] + a3 * d3[o]
            else:
                for o in range(O):
                    dWi[o] += a0 * d0[o] + a1 * d1[o] + a2 * d2[o] + a3 * d3[o]
        n += 4
    for n in range(n, N):
        dn, xn = d[n], x[n]
        for i in range(I):
            xi, dWi = xn[i], dW[i]
            if n == 0:
                for o in range(O):
                    dWi[o] = xi * dn[o]
            else:
                for o in range(O):
                    dWi[o] += xi * dn[o]
    for o in range(O):
        db[o] = d[0, o]
    for n in range(1, N):
        dn = d[n]
        for o in range(O):
            db[o] += dn[o]
    if not need_dx:
        return
    if N < 4:  # dx[n, i] = δ_n · W_i, a dot product per element
        for n in range(N):
            dn, dxn = d[n], dx[n]
            for i in range(I):
                Wi = Wm[i]
                s = dn[0] * Wi[0]
                for o in range(1, O):
                    s += dn[o] * Wi[o]
                dxn[i] = s
        return
    # From four samples on: dx_n = Σ_o δ[n, o] · Wᵀ_o, runs over contiguous rows of a copy of
    # Wᵀ, four samples per pass. A dot product per element ends in a horizontal sum, which
    # took most of W1's backward at batch 16 (and 40 µs of W2's at batch 16: 784 x 10).
    # The loop nest is _dense_forward's; a shared inline="always" helper for both measured
    # ~3% slower on W1 at batch 1, so it is written out twice.
    WT = X[so:so + O * I].reshape(O, I)
    for i in range(I):
        Wi = Wm[i]
        for o in range(O):
            WT[o, i] = Wi[o]
    n = 0
    while n + 4 <= N:
        y0, y1, y2, y3 = dx[n], dx[n + 1], dx[n + 2], dx[n + 3]
        for i in range(I):
            y0[i] = 0
            y1[i] = 0
            y2[i] = 0
            y3[i] = 0
        d0, d1, d2, d3 = d[n], d[n + 1], d[n + 2], d[n + 3]
        o = 0
        while o + 4 <= O:  # four rows of Wᵀ per pass, as in _dense_forward
            a0, a1, a2, a3 = d0[o], d0[o + 1], d0[o + 2], d0[o + 3]
            b0, b1, b2, b3 = d1[o], d1[o + 1], d1[o + 2], d1[o + 3]
            c0, c1, c2, c3 = d2[o], d2[o + 1], d2[o + 2], d2[o + 3]
            f0, f1, f2, f3 = d3[o], d3[o + 1], d3[o + 2], d3[o + 3]
            T0, T1, T2, T3 = WT[o], WT[o + 1], WT[o + 2], WT[o + 3]
            for i in range(I):
                t0, t1, t2, t3 = T0[i], T1[i], T2[i], T3[i]
                y0[i] += a0 * t0 + a1 * t1 + a2 * t2 + a3 * t3
                y1[i] += b0 * t0 + b1 * t1 + b2 * t2 + b3 * t3
                y2[i] += c0 * t0 + c1 * t1 + c2 * t2 + c3 * t3
                y3[i] += f0 * t0 + f1 * t1 + f2 * t2 + f3 * t3
            o += 4
        for o in range(o, O):
            a, b_, c, f, To = d0[o], d1[o], d2[o], d3[o], WT[o]
            for i in range(I):
                t = To[i]
                y0[i] += a * t
                y1[i] += b_ * t
                y2[i] += c * t
                y3[i] += f * t
        n += 4
    for n in range(n, N):
        dxn, dn = dx[n], d[n]
        for i in range(I):
            dxn[i] = dn[0] * WT[0, i]
        for o in range(1, O):
            c, WTo = dn[o], WT[o]
            for i in range(I):
                dxn[i] += c * WTo[i]


@jit_reduce
def _conv_backward(A, X, co, so, P, wo, G, bo, D, do, dxo, N, C, H, W, F, OH, OW, kh, kw, sh, sw,
                   ph, pw, need_dx):
    """dW (F, K) = Σ_n δ_n (F, Q) · cols_nᵀ; db = Σ δ; dx = col2im(Wᵀ · δ_n), with the scratch
    dcols (K, Q) at X[so:]."""
    K, Q = C * kh * kw, OH * OW
    cols = X[co:co + N * K * Q].reshape(N, K, Q)
    dcols = X[so:so + K * Q].reshape(K, Q)
    Wk = P[wo:wo + F * K].reshape(F, K)
    dW = G[wo:wo + F * K].reshape(F, K)
    db = G[bo:bo + F]
    d = D[do:do + N * F * Q].reshape(N, F, Q)
    dx = D[dxo:dxo + N * C * H * W].reshape(N, C, H, W)
    _zero(G[wo:wo + F * K])
    _zero(db)
    for n in range(N):
        for f in range(F):
            df, dWf = d[n, f], dW[f]
            acc = db[f]
            for q in range(Q):
                acc += df[q]
            db[f] = acc
            for k in range(K):
                ck = cols[n, k]
                acc = dWf[k]
                for q in range(Q):
                    acc += df[q] * ck[q]
                dWf[k] = acc
        if need_dx:
            _zero(X[so:so + K * Q])
            for f in range(F):
                df, Wf = d[n, f], Wk[f]
                for k in range(K):
                    w, dk = Wf[k], dcols[k]
                    for q in range(Q):
                        dk[q] += w * df[q]
            _col2im(dcols, kh, kw, sh, sw, ph, pw, dx[n])


@jit
def _col2im(dcols, kh, kw, sh, sw, ph, pw, dx):
    """dx (C, H, W) = Σ over positions of dcols (C·kh·kw, OH·OW); the padding is dropped."""
    C, H, W = dx.shape
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    for c in range(C):
        for h in range(H):
            for w in range(W):
                dx[c, h, w] = 0
    k = 0
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                row = dcols[k]
                lo, hi = _valid_range(OW, sw, j, pw, W)
                for oh in range(OH):
                    ih = oh * sh + i - ph
                    if ih < 0 or ih >= H:
                        continue
                    src = row[oh * OW + lo:oh * OW + hi]
                    dst = dx[c, ih, lo * sw + j - pw:]
                    if sw == 1:
                        for q in range(hi - lo):
                            dst[q] += src[q]
                    else:
                        for q in range(hi - lo):
                            dst[q * sw] += src[q]
                k += 1


@jit
def _pool_backward(D, do, dxo, IDX, ao, N, C, H, W, OH, OW, kw, sh, sw):
    d = D[do:do + N * C * OH * OW].reshape(N * C, OH, OW)
    arg = IDX[ao:ao + N * C * OH * OW].reshape(N * C, OH, OW)
    dx = D[dxo:dxo + N * C * H * W].reshape(N * C, H, W)
    if kw == 2 and sh == 2 and sw == 2 and H == 2 * OH and W == 2 * OW:
        # windows tile the input: zero each window, then one store at the arg-max; a
        # computed index, not a branch per position (random arg-maxes mispredict)
        for nc in range(N * C):
            plane = dx[nc].reshape(H * W)
            for oh in range(OH):
                dr, ar = d[nc, oh], arg[nc, oh]
                top = 2 * oh * W
                for ow in range(OW):
                    base = top + 2 * ow
                    plane[base] = 0
                    plane[base + 1] = 0
                    plane[base + W] = 0
                    plane[base + W + 1] = 0
                    where = ar[ow]
                    plane[base + (where >> 1) * W + (where & 1)] = dr[ow]
        return
    _zero(D[dxo:dxo + N * C * H * W])
    for nc in range(N * C):
        for oh in range(OH):
            for ow in range(OW):
                where = arg[nc, oh, ow]
                dx[nc, oh * sh + where // kw, ow * sw + where % kw] += d[nc, oh, ow]


@jit
def _activation_backward(kind, A, yo, D, do, size, one):
    """δ ⊙ f′(y), in place."""
    y = A[yo:yo + size]
    d = D[do:do + size]
    if kind == RELU:
        for k in range(size):
            if not y[k] > 0:
                d[k] = d[k] * 0
    elif kind == SIGMOID:
        for k in range(size):
            d[k] = d[k] * y[k] * (one - y[k])
    else:
        for k in range(size):
            d[k] = d[k] * (one - y[k] * y[k])


# -- stride-1 convolutions without im2col ----------------------------------------------------
# With stride 1, im2col's row (c, i, j) is the zero-padded image plane shifted by i·Wp + j,
# if outputs are computed "wide": OH rows of Wp (not OW) positions, the last kw − 1 of each
# row junk. So every product reads the padded plane directly in runs of OH·Wp contiguous
# elements: no im2col, no col2im (each ~10 µs per image of W2). Junk outputs are cropped;
# their δ is set to 0, so they add nothing to dW or dx. Reads run up to kw − 1 elements past
# the last plane: the padded buffer has that much slack.

@jit_inline
def _wide_sizes(C, H, W, kh, kw, ph, pw):
    """(Hp, Wp, padded buffer size with slack, wide output length OH·Wp)."""
    Hp, Wp = H + 2 * ph, W + 2 * pw
    return Hp, Wp, C * Hp * Wp + kw, (Hp - kh + 1) * Wp


@jit_inline
def _pad(x, ph, pw, Hp, Wp, xp):
    """xp (C·Hp·Wp + slack,) = x (C, H, W) inside a zero border."""
    C, H, W = x.shape
    _zero(xp)
    for c in range(C):
        for h in range(H):
            src, dst = x[c, h], xp[(c * Hp + h + ph) * Wp + pw:]
            for w in range(W):
                dst[w] = src[w]


@jit_reduce
def _conv_forward_wide(A, xo, yo, X, co, so, P, wo, bo, N, C, H, W, F, OH, OW, kh, kw, ph, pw):
    """As ``_conv_forward`` for stride 1; keeps each padded image at X[co + n·size] for
    backward and uses X[so:] for the wide output."""
    K = C * kh * kw
    Hp, Wp, size, Qw = _wide_sizes(C, H, W, kh, kw, ph, pw)
    x = A[xo:xo + N * C * H * W].reshape(N, C, H, W)
    y = A[yo:yo + N * F * OH * OW].reshape(N, F, OH, OW)
    Wk = P[wo:wo + F * K].reshape(F, K)
    b = P[bo:bo + F]
    yw = X[so:so + F * Qw].reshape(F, Qw)
    for n in range(N):
        xp = X[co + n * size:co + (n + 1) * size]
        _pad(x[n], ph, pw, Hp, Wp, xp)
        # four output planes at a time: each load of the input feeds four multiply-adds
        f = 0
        while f < F:
            fb = min(4, F - f)
            for r in range(fb):
                yr, br = yw[f + r], b[f + r]
                for q in range(Qw):
                    yr[q] = br
            for c in range(C):
                for i in range(kh):
                    top, k0 = (c * Hp + i) * Wp, (c * kh + i) * kw
                    j = 0
                    # three taps of a kernel row per pass: y loaded and stored once per three
                    # multiply-adds, not per one (W2's second convolution: 10.5 -> 6 µs)
                    while fb == 4 and j + 3 <= kw:
                        s0, s1, s2, k = xp[top + j:], xp[top + j + 1:], xp[top + j + 2:], k0 + j
                        a0, a1, a2 = Wk[f, k], Wk[f, k + 1], Wk[f, k + 2]
                        b0, b1, b2 = Wk[f + 1, k], Wk[f + 1, k + 1], Wk[f + 1, k + 2]
                        c0, c1, c2 = Wk[f + 2, k], Wk[f + 2, k + 1], Wk[f + 2, k + 2]
                        d0, d1, d2 = Wk[f + 3, k], Wk[f + 3, k + 1], Wk[f + 3, k + 2]
                        y0, y1, y2, y3 = yw[f], yw[f + 1], yw[f + 2], yw[f + 3]
                        for q in range(Qw):
                            u, v, z = s0[q], s1[q], s2[q]
                            y0[q] += a0 * u + a1 * v + a2 * z
                            y1[q] += b0 * u + b1 * v + b2 * z
                            y2[q] += c0 * u + c1 * v + c2 * z
                            y3[q] += d0 * u + d1 * v + d2 * z
                        j += 3
                    for j in range(j, kw):
                        k = k0 + j
                        src = xp[top + j:]
                        if fb == 4:
                            w0, w1, w2, w3 = Wk[f, k], Wk[f + 1, k], Wk[f + 2, k], Wk[f + 3, k]
                            y0, y1, y2, y3 = yw[f], yw[f + 1], yw[f + 2], yw[f + 3]
                            for q in range(Qw):
                                v = src[q]
                                y0[q] += w0 * v
                                y1[q] += w1 * v
                                y2[q] += w2 * v
                                y3[q] += w3 * v
                        else:
                            for r in range(fb):
                                w, yr = Wk[f + r, k], yw[f + r]
                                for q in range(Qw):
                                    yr[q] += w * src[q]
            f += fb
        for f in range(F):
            for oh in range(OH):
                src, dst = yw[f, oh * Wp:], y[n, f, oh]
                for ow in range(OW):
                    dst[ow] = src[ow]


@jit_reduce
def _conv_backward_wide(X, co, so, P, wo, G, bo, D, do, dxo, N, C, H, W, F, OH, OW, kh, kw, ph, pw,
                        need_dx):
    """As ``_conv_backward`` for stride 1, from the padded images ``_conv_forward_wide`` kept."""
    K = C * kh * kw
    Hp, Wp, size, Qw = _wide_sizes(C, H, W, kh, kw, ph, pw)
    Wk = P[wo:wo + F * K].reshape(F, K)
    dW = G[wo:wo + F * K].reshape(F, K)
    db = G[bo:bo + F]
    d = D[do:do + N * F * OH * OW].reshape(N, F, OH, OW)
    dx = D[dxo:dxo + N * C * H * W].reshape(N, C, H, W)
    dw = X[so:so + F * Qw].reshape(F, Qw)
    dxp = X[so + F * Qw:so + F * Qw + size]
    _zero(G[wo:wo + F * K])
    _zero(db)
    for n in range(N):
        xp = X[co + n * size:co + (n + 1) * size]
        for f in range(F):
            acc = db[f]
            for oh in range(OH):
                src, dst = d[n, f, oh], dw[f, oh * Wp:(oh + 1) * Wp]
                for ow in range(OW):
                    dst[ow] = src[ow]
                    acc += src[ow]
                for ow in range(OW, Wp):
                    dst[ow] = 0
            db[f] = acc
        for c in range(C):
            for i in range(kh):
                top, k0 = (c * Hp + i) * Wp, (c * kh + i) * kw
                # dW: three taps by four planes per pass, twelve sums from seven loads a step
                j = 0
                while j + 3 <= kw:
                    s0, s1, s2, k = xp[top + j:], xp[top + j + 1:], xp[top + j + 2:], k0 + j
                    f = 0
                    while f + 4 <= F:
                        e0, e1, e2, e3 = dw[f], dw[f + 1], dw[f + 2], dw[f + 3]
                        a0, a1, a2 = dW[f, k], dW[f, k + 1], dW[f, k + 2]
                        b0, b1, b2 = dW[f + 1, k], dW[f + 1, k + 1], dW[f + 1, k + 2]
                        c0, c1, c2 = dW[f + 2, k], dW[f + 2, k + 1], dW[f + 2, k + 2]
                        d0, d1, d2 = dW[f + 3, k], dW[f + 3, k + 1], dW[f + 3, k + 2]
                        for q in range(Qw):
                            u, v, z = s0[q], s1[q], s2[q]
                            g0, g1, g2, g3 = e0[q], e1[q], e2[q], e3[q]
                            a0 += g0 * u
                            a1 += g0 * v
                            a2 += g0 * z
                            b0 += g1 * u
                            b1 += g1 * v
                            b2 += g1 * z
                            c0 += g2 * u
                            c1 += g2 * v
                            c2 += g2 * z
                            d0 += g3 * u
                            d1 += g3 * v
                            d2 += g3 * z
                        dW[f, k], dW[f, k + 1], dW[f, k + 2] = a0, a1, a2
                        dW[f + 1, k], dW[f + 1, k + 1], dW[f + 1, k + 2] = b0, b1, b2
                        dW[f + 2, k], dW[f + 2, k + 1], dW[f + 2, k + 2] = c0, c1, c2
                        dW[f + 3, k], dW[f + 3, k + 1], dW[f + 3, k + 2] = d0, d1, d2
                        f += 4
                    for f in range(f, F):
                        ef = dw[f]
                        a0, a1, a2 = dW[f, k], dW[f, k + 1], dW[f, k + 2]
                        for q in range(Qw):
                            g0 = ef[q]
                            a0 += g0 * s0[q]
                            a1 += g0 * s1[q]
                            a2 += g0 * s2[q]
                        dW[f, k], dW[f, k + 1], dW[f, k + 2] = a0, a1, a2
                    j += 3
                for j in range(j, kw):
                    k, src = k0 + j, xp[top + j:]
                    for f in range(F):
                        ef = dw[f]
                        acc = dW[f, k]
                        for q in range(Qw):
                            acc += ef[q] * src[q]
                        dW[f, k] = acc
        if not need_dx:
            continue
        # dx (padded) = Σ_f W[f, k] · δ_f shifted by tap k, eight planes per pass
        _zero(dxp)
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    k = (c * kh + i) * kw + j
                    dst = dxp[(c * Hp + i) * Wp + j:]
                    f = 0
                    while f + 8 <= F:
                        e0, e1, e2, e3 = dw[f], dw[f + 1], dw[f + 2], dw[f + 3]
                        e4, e5, e6, e7 = dw[f + 4], dw[f + 5], dw[f + 6], dw[f + 7]
                        w0, w1, w2, w3 = Wk[f, k], Wk[f + 1, k], Wk[f + 2, k], Wk[f + 3, k]
                        w4, w5, w6, w7 = Wk[f + 4, k], Wk[f + 5, k], Wk[f + 6, k], Wk[f + 7, k]
                        for q in range(Qw):
                            dst[q] += (w0 * e0[q] + w1 * e1[q] + w2 * e2[q] + w3 * e3[q]
                                       + w4 * e4[q] + w5 * e5[q] + w6 * e6[q] + w7 * e7[q])
                        f += 8
                    while f + 4 <= F:
                        e0, e1, e2, e3 = dw[f], dw[f + 1], dw[f + 2], dw[f + 3]
                        w0, w1, w2, w3 = Wk[f, k], Wk[f + 1, k], Wk[f + 2, k], Wk[f + 3, k]
                        for q in range(Qw):
                            dst[q] += w0 * e0[q] + w1 * e1[q] + w2 * e2[q] + w3 * e3[q]
                        f += 4
                    for f in range(f, F):
                        wf, ef = Wk[f, k], dw[f]
                        for q in range(Qw):
                            dst[q] += wf * ef[q]
        for c in range(C):
            for h in range(H):
                src, dst = dxp[(c * Hp + h + ph) * Wp + pw:], dx[n, c, h]
                for col in range(W):
                    dst[col] = src[col]


# -- the entry points -----------------------------------------------------------------------

@jit_reduce
def _inputs_bad(A, x, N, in_size, labels, targets, use_labels, K, training):
    """Check before any work and copy x into A (scratch). Returns a status code or 0.0.
    Sizes first: a wrong one would read or write past the buffers (``fused`` checks shapes,
    but this is the last line). v·0 is 0 for a finite v and NaN for NaN or ±inf, so a sum of
    them is one vectorised pass (a per-element isfinite with an early exit was 0.7 µs of W3's
    13 µs step)."""
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
def _views(WF, WI):
    """(ops, N, A, D, X, cols_size, IDX, S) in the workspace WF, WI (module docstring).
    ``blas_step`` runs this same code in Python (``_views.py_func``)."""
    layers = WI[H_LAYERS]
    end = HEADER + layers * NCOLS
    return (WI[HEADER:end].reshape(layers, NCOLS), WI[H_N], WF[WI[H_A]:WI[H_A_END]],
            WF[WI[H_D]:WI[H_D_END]], WF[WI[H_X]:], WI[H_COLS], WI[end:], WF[:S_SIZE])


@jit
def run(x, labels, targets, P, G, WF, WI, loss_kind, opt_kind, buf1, buf2):
    """Forward, loss, backward, update for the batch x (N·input size,) with int labels (N,)
    or, if labels is empty, targets (N·K,). Returns the mean loss, or a status code (BAD_*)
    when an input is unusable: then nothing changed. S[S_STATUS] tells the two apart (0 after
    a step; a loss may be negative). Strided convolutions are not in this call (BAD_PROGRAM):
    ``blas_step`` runs them.
    Gradients are left in G exactly as the layers' backward would leave them.

    With opt_kind == FORWARD_ONLY: the forward pass alone (inference); outputs at
    A[N·ops[-1, OUT]:], returns 0. (One entry point, not two: each compiled entry point costs
    seconds of compile time on a Pi.)
    """
    ops, N, A, D, X, cols_size, IDX, S = _views(WF, WI)
    use_labels = labels.size > 0
    last = ops[ops.shape[0] - 1]
    K = last[OUT_SIZE]
    status = _inputs_bad(A, x, N, ops[0, IN_SIZE], labels, targets, use_labels, K,
                         opt_kind != FORWARD_ONLY)
    for i in range(ops.shape[0]):  # the buffers of a strided convolution are laid out for im2col
        if ops[i, KIND] == CONV and (ops[i, SH] != 1 or ops[i, SW] != 1):
            status = BAD_PROGRAM
    S[S_STATUS] = status
    if status != 0:
        return status
    one = S[S_ONE]
    # Forward and backward are loops here, not functions of their own: numba links a called
    # function's optimised code into the caller and LLVM optimises it all again, so every
    # level of calls between run and the op kernels cost ~1.5 s of compile time (the first
    # step from an empty cache: 13.0-14.2 s with two such levels, 9-10 s without; no
    # slower at run time).
    for i in range(ops.shape[0]):  # forward
        op = ops[i]
        kind, xo, yo = op[KIND], N * op[IN], N * op[OUT]
        if kind == DENSE:
            _dense_forward(A, xo, yo, P, op[WOFF], op[BOFF], N, op[C], op[F])
        elif kind == CONV:  # stride 1 (strided convolutions run op by op: blas_step)
            _conv_forward_wide(A, xo, yo, X, N * op[COLS], N * cols_size, P, op[WOFF], op[BOFF], N,
                               op[C], op[H], op[W], op[F], op[OH], op[OW], op[KH], op[KW], op[PH], op[PW])
        elif kind == POOL:
            _pool_forward(A, xo, yo, IDX, N * op[ARG], N, op[C], op[H], op[W], op[OH], op[OW],
                          op[KH], op[KW], op[SH], op[SW])
        elif kind != FLATTEN:
            _activation_forward(kind, A, xo, yo, N * op[OUT_SIZE], one)
    if opt_kind == FORWARD_ONLY:
        return 0.0
    loss = _loss(loss_kind, A, N * last[OUT], N, K, labels, targets, use_labels, D, S[S_N], one)
    # backward: ∂L/∂y is in D's first half; the halves swap at each op with weights or pooling;
    # ∂L/∂x of layer 0 is not computed. int64, not the literal 0: a literal would compile every
    # op kernel a second time.
    do, dxo = np.int64(0), np.int64(D.size // 2)
    for i in range(ops.shape[0] - 1, -1, -1):
        op = ops[i]
        kind, xo, yo = op[KIND], N * op[IN], N * op[OUT]
        need_dx = i > 0
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
        elif kind == FLATTEN:
            continue
        else:
            if need_dx:
                _activation_backward(kind, A, yo, D, do, N * op[OUT_SIZE], one)
            continue
        do, dxo = dxo, do
    h = S_HYPER
    if opt_kind == SGD_UPDATE:
        _k_sgd_update(P, G, buf1, S[h], S[h + 1], S[h + 2])
    elif opt_kind == ADAM_UPDATE:
        _k_adam_update(P, G, buf1, buf2, S[h], S[h + 1], S[h + 2], S[h + 3], S[h + 4], S[h + 5],
                       S[h + 6], S[h + 7])
    return loss
