"""Image augmentation in one pass: each sample's numbers (its affine map, contrast,
brightness, noise offset) from its row of uniform draws, then each output pixel read from
that map of the input (whole pixels, or bilinear) and changed by them.
``kernels_numpy.augment_images`` is the same arithmetic in the same order, so both backends
give the same pixels."""

import numpy as np

from .. import opcodes as op
from ..jit import jit


@jit
def _augment_images(x, y, u, settings, turn, mean, table):
    """x, y (N, C, H, W); u (N, len(DRAW_COLUMNS)) float64 uniform draws (columns U_*); settings
    (AUG_SLOTS,) float64 (slots AUG_*); turn (N, 2) the cosine and sine of each sample's
    angle; mean (N,) its mean; table float64 standard normal values. The formulas are
    ``kernels_numpy.augment_images``'s."""
    N, C, H, W = x.shape
    size = C * H * W
    planes = x.reshape(N, C, H * W)
    shift, noise = settings[op.AUG_SHIFT], settings[op.AUG_NOISE]
    bilinear = settings[op.AUG_ROTATE] != 0 or settings[op.AUG_SCALE] != 0
    cy, cx = (H - 1) / 2, (W - 1) / 2
    # Per output column of one row: where its four neighbours start in the plane, the steps
    # to the right and down ones (0 at the frame's last column or row), and the weights.
    # Worked out for the whole row first, so that loop has no integer conversion in it.
    source_cols = np.empty(W, np.int64)
    corner, step_right, step_down = np.empty(W, np.int32), np.empty(W, np.int32), np.empty(W, np.int32)
    right, down = np.empty(W), np.empty(W)
    for n in range(N):
        rows = np.floor(u[n, op.U_SHIFT_ROWS] * (2 * shift + 1)) - shift
        cols = np.floor(u[n, op.U_SHIFT_COLS] * (2 * shift + 1)) - shift
        zoom = 1 + (2 * u[n, op.U_SCALE] - 1) * settings[op.AUG_SCALE]
        a, b = turn[n, 0] / zoom, turn[n, 1] / zoom
        c, d, e, f = cx - a * cx - b * cy - cols, -b, a, cy - a * cy + b * cx - rows
        if settings[op.AUG_HFLIP] != 0 and u[n, op.U_HFLIP] < 0.5:
            a, b, c = -a, -b, -c + (W - 1)
        k_contrast = 1 + (2 * u[n, op.U_CONTRAST] - 1) * settings[op.AUG_CONTRAST]
        k_bright = 1 + (2 * u[n, op.U_BRIGHTNESS] - 1) * settings[op.AUG_BRIGHTNESS]
        start = int(np.floor(u[n, op.U_NOISE] * (len(table) - size + 1)))
        m = mean[n]
        if not bilinear:  # a shift or a mirror: each row from one row, each column from one column
            for j in range(W):
                source_cols[j] = int(min(max(a * j + c, 0.0), W - 1.0))
        for i in range(H):
            if bilinear:
                for j in range(W):
                    col = min(max(a * j + b * i + c, 0.0), W - 1.0)
                    row = min(max(d * j + e * i + f, 0.0), H - 1.0)
                    left, top = np.floor(col), np.floor(row)
                    right[j], down[j] = col - left, row - top
                    corner[j] = np.int32(top) * W + np.int32(left)
                    step_right[j] = 1 if left < W - 1.0 else 0
                    step_down[j] = W if top < H - 1.0 else 0
            for ch in range(C):
                plane, out = planes[n, ch], y[n, ch, i]
                noise_row = table[start + (ch * H + i) * W:start + (ch * H + i + 1) * W]
                if bilinear:
                    for j in range(W):
                        k, r, dn = corner[j], right[j], down[j]
                        upper = plane[k] * (1 - r) + plane[k + step_right[j]] * r
                        k += step_down[j]
                        lower = plane[k] * (1 - r) + plane[k + step_right[j]] * r
                        v = upper * (1 - dn) + lower * dn
                        out[j] = ((v - m) * k_contrast + m) * k_bright + noise * noise_row[j]
                else:
                    source = int(min(max(e * i + f, 0.0), H - 1.0)) * W
                    for j in range(W):
                        v = 1.0 * plane[source + source_cols[j]]
                        out[j] = ((v - m) * k_contrast + m) * k_bright + noise * noise_row[j]
