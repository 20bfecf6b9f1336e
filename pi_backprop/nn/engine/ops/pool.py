"""Pooling. Max: the window's maximum forward (its index kept in IDX), δ routed to it
backward. Average: the window's mean forward, δ shared equally by its inputs backward (a
window the size of the plane is the global average)."""

from ..jit import jit, jit_inline
from .elementwise import _zero


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
    mispredict half the time. Returns True when x holds a NaN (result unusable)."""
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
def _avgpool_forward(A, xo, yo, N, C, H, W, OH, OW, kh, kw, sh, sw, one):
    """y = Σ window / (kh·kw), in the model's dtype."""
    x = A[xo:xo + N * C * H * W].reshape(N * C, H, W)
    y = A[yo:yo + N * C * OH * OW].reshape(N * C, OH, OW)
    count = one * (kh * kw)
    for nc in range(N * C):
        plane, out = x[nc], y[nc]
        for oh in range(OH):
            for ow in range(OW):
                total = one - one
                for i in range(kh):
                    row = plane[oh * sh + i]
                    for j in range(kw):
                        total += row[ow * sw + j]
                out[oh, ow] = total / count


@jit
def _avgpool_backward(D, do, dxo, N, C, H, W, OH, OW, kh, kw, sh, sw, one):
    """dx = Σ over the windows holding an input of δ / (kh·kw); 0 for inputs in none."""
    d = D[do:do + N * C * OH * OW].reshape(N * C, OH, OW)
    dx = D[dxo:dxo + N * C * H * W].reshape(N * C, H, W)
    _zero(D[dxo:dxo + N * C * H * W])
    count = one * (kh * kw)
    for nc in range(N * C):
        plane, delta = dx[nc], d[nc]
        for oh in range(OH):
            for ow in range(OW):
                share = delta[oh, ow] / count
                for i in range(kh):
                    row = plane[oh * sh + i]
                    for j in range(kw):
                        row[ow * sw + j] += share
