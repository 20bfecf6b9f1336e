"""Pictures for the page: a camera frame or a model input as PNG (the standard library's
zlib) or JPEG (with simplejpeg, which picamera2 brings, or Pillow, where either is there).

    data, content_type = encode(rgb)      # uint8 (H, W) grey or (H, W, 3) R, G, B
"""

import importlib
import struct
import zlib

import numpy as np

JPEG_QUALITY = 80
PNG_LEVEL = 3            # zlib level: a frame a few times a second on a Zero 2 W


def _jpeg_encoder():
    """A function (array) -> JPEG bytes, from the first library present, or None."""
    try:
        simplejpeg = importlib.import_module("simplejpeg")
    except ImportError:
        pass
    else:
        def with_simplejpeg(pixels):
            if pixels.ndim == 2:
                return simplejpeg.encode_jpeg(pixels[:, :, None], quality=JPEG_QUALITY, colorspace="GRAY")
            return simplejpeg.encode_jpeg(pixels, quality=JPEG_QUALITY, colorspace="RGB")
        return with_simplejpeg
    try:
        pil_image = importlib.import_module("PIL.Image")
    except ImportError:
        return None
    import io

    def with_pillow(pixels):
        buffer = io.BytesIO()
        pil_image.fromarray(pixels).save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()
    return with_pillow


_JPEG = _jpeg_encoder()


def encode(pixels: np.ndarray, *, jpeg: bool = True) -> tuple[bytes, str]:
    """``(bytes, content type)`` of uint8 (H, W) or (H, W, 3) pixels: JPEG where a library
    for it is present and ``jpeg``, else PNG."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if jpeg and _JPEG is not None:
        return _JPEG(pixels), "image/jpeg"
    return png(pixels), "image/png"


def png(pixels: np.ndarray) -> bytes:
    """uint8 (H, W) grey or (H, W, 3) RGB pixels as a PNG file."""
    height, width = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    raw = np.zeros((height, rows.shape[1] + 1), np.uint8)   # filter byte 0 (none) before each row
    raw[:, 1:] = rows

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_LEVEL))
            + chunk(b"IEND", b""))


def model_input_pixels(x: np.ndarray) -> np.ndarray:
    """A model input float32 (C, H, W) in [0, 1] as uint8 (H, W) grey or (H, W, 3) pixels."""
    pixels = np.clip(np.rint(np.asarray(x, np.float32) * 255), 0, 255).astype(np.uint8)
    return pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels[:3], 0, -1)
