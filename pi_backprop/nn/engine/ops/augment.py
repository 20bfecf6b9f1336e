"""Image augmentation in one pass: each output pixel read from an affine map of the input
(whole pixels, or bilinear), then contrast, brightness and noise; the per-sample numbers
come from the caller (``training.augment``), and ``kernels_numpy.augment_images`` is the same
arithmetic in the same order, so both backends give the same pixels."""

import numpy as np

from ..jit import jit


@jit
def _augment_images(x, y, coef, bilinear, mean, contrast, brightness, noise, table, offsets):
    """x, y (N, C, H, W); coef (N, 6) float64: the input column and row of output pixel
    (i, j) are coef[0]·j + coef[1]·i + coef[2] and coef[3]·j + coef[4]·i + coef[5], clamped
    to the frame (without ``bilinear``: whole numbers, coef[1] = coef[3] = 0); then
    v ← ((v − mean)·contrast + mean)·brightness + noise·table[offset + k] with k the pixel's
    index in the sample, in float64, stored in y's dtype."""
    N, C, H, W = x.shape
    source_cols = np.empty(W, np.int64)
    for n in range(N):
        a, b, c, d, e, f = coef[n, 0], coef[n, 1], coef[n, 2], coef[n, 3], coef[n, 4], coef[n, 5]
        m, k_contrast, k_bright, start = mean[n], contrast[n], brightness[n], offsets[n]
        if not bilinear:  # a shift or a mirror: each row from one row, each column from one column
            for j in range(W):
                source_cols[j] = int(min(max(a * j + c, 0.0), W - 1.0))
        for ch in range(C):
            plane = x[n, ch]
            for i in range(H):
                out = y[n, ch, i]
                noise_row = table[start + (ch * H + i) * W:start + (ch * H + i + 1) * W]
                if bilinear:
                    for j in range(W):
                        col = min(max(a * j + b * i + c, 0.0), W - 1.0)
                        row = min(max(d * j + e * i + f, 0.0), H - 1.0)
                        top, left = int(row), int(col)   # the floor: both are >= 0
                        down, right = row - top, col - left
                        bottom, rightmost = min(top + 1, H - 1), min(left + 1, W - 1)
                        upper = plane[top, left] * (1 - right) + plane[top, rightmost] * right
                        lower = plane[bottom, left] * (1 - right) + plane[bottom, rightmost] * right
                        v = upper * (1 - down) + lower * down
                        out[j] = ((v - m) * k_contrast + m) * k_bright + noise * noise_row[j]
                else:
                    source = plane[int(min(max(e * i + f, 0.0), H - 1.0))]
                    for j in range(W):
                        v = 1.0 * source[source_cols[j]]
                        out[j] = ((v - m) * k_contrast + m) * k_bright + noise * noise_row[j]
