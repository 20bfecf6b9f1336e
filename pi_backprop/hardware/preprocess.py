"""Camera frame -> model input: grey or colour, centre-crop, area resize, [0, 1] float32 CHW.

Plain numpy, deterministic, no camera needed: the real camera, the simulated camera and
``pi-backprop predict`` on an image file all go through ``frame_to_input``.
"""

import numpy as np

from ..exc import ShapeError

# ITU-R BT.601 luma weights, the usual choice for camera RGB -> grey.
LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)
CHANNEL_ORDERS = ("RGB", "BGR")


def crop_box(height: int, width: int, aspect: float) -> tuple:
    """The largest centred (top, left, crop_height, crop_width) box of width/height ``aspect``.

    Odd leftovers go to the bottom/right, so the box is the same for a given frame size.
    """
    if width >= height * aspect:
        crop_h, crop_w = height, max(1, min(width, round(height * aspect)))
    else:
        crop_h, crop_w = max(1, min(height, round(width / aspect))), width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def area_weights(size_in: int, size_out: int) -> np.ndarray:
    """float32 (size_out, size_in): row ``o`` averages the input cells that output cell ``o`` covers.

    Each output cell spans ``size_in / size_out`` input cells; partly covered cells count
    by the covered fraction, so every row sums to 1. Upscaling degrades to nearest-cell.
    """
    scale = size_in / size_out
    starts = np.arange(size_out) * scale
    ends = starts + scale
    cells = np.arange(size_in)
    overlap = np.clip(np.minimum(ends[:, None], cells[None, :] + 1) - np.maximum(starts[:, None], cells[None, :]),
                      0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def frame_to_input(frame, input_shape, *, channel_order: str = "RGB") -> np.ndarray:
    """One camera frame (or a stack of them) as the model's input.

    frame         : uint8, shape (H, W, 3) colour, (H, W) grey, or (N, H, W, 3) / (N, H, W)
                    for a batch; values 0..255. A 4th colour channel (XRGB8888 padding)
                    is dropped.
    input_shape   : the model's (C, H, W) with C = 1 (grey) or 3 (colour)
    channel_order : memory order of the colour channels: "RGB", or "BGR" for picamera2's
                    "RGB888" format (which is B, G, R in memory)
    Returns float32 (C, H, W), or (N, C, H, W) for a batch, in [0, 1], channels in R, G, B
    order; the frame is centre-cropped to the model's aspect ratio and area-averaged
    down to H x W.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ShapeError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise ShapeError(f"a camera model needs input_shape (1 or 3, height, width), got {tuple(input_shape)}")
    channels, out_h, out_w = shape
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ShapeError(f"a camera frame must be uint8 0..255, got dtype {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[-1] not in (3, 4)):
        frame = frame[..., None]  # grey: (H, W) or (N, H, W)
    elif frame.ndim not in (3, 4) or frame.shape[-1] not in (3, 4):
        raise ShapeError(f"a camera frame must be (H, W), (H, W, 3) or a stack of them, got shape {frame.shape}")
    batched = frame.ndim == 4
    if not batched:
        frame = frame[None]
    frame = frame[..., :3]
    height, width = frame.shape[1:3]
    top, left, crop_h, crop_w = crop_box(height, width, out_w / out_h)
    rows, cols = area_weights(crop_h, out_h), area_weights(crop_w, out_w)
    cropped = frame[:, top:top + crop_h, left:left + crop_w, :]
    if frame.shape[-1] == 3:
        if channel_order == "BGR":
            cropped = cropped[..., ::-1]
        if channels == 1:
            # Grey before resizing: one channel to resample instead of three.
            cropped = (cropped.astype(np.float32) @ LUMA_RGB)[..., None]
    elif channels == 3:
        cropped = np.repeat(cropped, 3, axis=-1)
    planes = np.moveaxis(cropped, -1, 1).astype(np.float32)  # (N, C, h, w)
    resized = rows @ planes @ cols.T
    out = np.clip(resized * np.float32(1 / 255), 0.0, 1.0).astype(np.float32, copy=False)
    return out if batched else out[0]
