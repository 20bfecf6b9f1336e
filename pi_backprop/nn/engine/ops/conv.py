"""Convolutions (cross-correlation): im2col for strided ones, and for stride 1 a "wide"
form without im2col.

With stride 1, im2col's row (c, i, j) is the zero-padded image plane shifted by i·Wp + j,
if outputs are computed "wide": OH rows of Wp (not OW) positions, the last kw − 1 of each
row junk. So every product reads the padded plane directly in contiguous runs of OH·Wp
elements: no im2col, no col2im. Junk outputs are cropped; their δ is set to 0, so they add
nothing to dW or dx. Reads run up to kw − 1 elements past the last plane: the padded buffer
has that much slack.
"""

from ..jit import jit, jit_inline, jit_reduce
from .elementwise import _zero


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
                    # explicit loops: numba's slice fill out[a:b] = 0 has a set-up cost per call
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
                    # multiply-adds, not per one (BENCHMARKS.md: second round)
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
