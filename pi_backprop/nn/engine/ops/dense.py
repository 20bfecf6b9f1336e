"""Dense layers: y = x·W + b forward; dW = xᵀ·δ, db = Σ_n δ, dx = δ·Wᵀ backward.

The products are hand loops (numba's ``np.dot`` would need SciPy) in blocks of four samples
by four rows of W, so that each load of W feeds four samples and each load and store of an
output row serves four rows: the rows here are 4 to 100 elements, and a pass's set-up costs
as much as its arithmetic unless each pass does more of it.
"""

from ..jit import jit, jit_reduce


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
    # once per four rows, not once per row.
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
    # took most of a small dense backward from batch 16 on.
    # The loop nest is _dense_forward's; a shared inline="always" helper for both measured
    # slower on small layers (BENCHMARKS.md), so it is written out twice.
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
