"""Image files as camera-like frames, without a required dependency.

``read_image(path)`` gives uint8 (H, W) grey or (H, W, 3) R, G, B, which
``hardware.preprocess.frame_to_input`` turns into a model input. Pillow is used when it is
importable (any format it knows); without it, PNG is decoded here with zlib and struct
(8- and 16-bit and low-bit-depth grey, RGB, palette, with or without alpha; not
interlaced), and JPEG asks for Pillow or a PNG. An alpha channel is dropped.
"""

import struct
import zlib
from pathlib import Path

import numpy as np

from .. import budget
from ..exc import ConfigError, DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_START = b"\xff\xd8\xff"
# Bytes a pixel costs while it is read and made a model input (decoded samples, an RGB copy,
# float32 copies in preprocessing): the memory budget over this is the largest image read.
BYTES_PER_PIXEL = 20
PILLOW_HINT = "pip install pillow (on Raspberry Pi OS: sudo apt install python3-pil)"

# PNG colour type -> (name, samples per pixel, allowed bit depths)
_COLOUR_TYPES = {0: ("grey", 1, (1, 2, 4, 8, 16)), 2: ("RGB", 3, (8, 16)), 3: ("palette", 1, (1, 2, 4, 8)),
                 4: ("grey+alpha", 2, (8, 16)), 6: ("RGBA", 4, (8, 16))}


def read_image(path) -> np.ndarray:
    """The pixels of a PNG or JPEG file: uint8 (H, W) for grey, (H, W, 3) R, G, B for colour.

    ``DataError`` for a file that is missing or not a readable image; ``ConfigError`` for a
    JPEG (or other non-PNG format) when Pillow is not installed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            start = file.read(8)
    except OSError as error:
        raise DataError(f"cannot read image {path}: {error.strerror or error}") from None
    try:
        import PIL.Image
    except ImportError:
        PIL = None
    if PIL is not None:
        return _read_with_pillow(path, PIL)
    if start.startswith(PNG_SIGNATURE):
        return decode_png(path.read_bytes(), str(path))
    if start.startswith(JPEG_START):
        raise ConfigError(f"{path} is a JPEG, which needs Pillow: {PILLOW_HINT}; or convert it to PNG")
    raise DataError(f"{path} is not a PNG image (and Pillow, which reads other formats, is not "
                    f"installed: {PILLOW_HINT})")


def max_pixels() -> int:
    """The largest image read (width × height), from the memory budget: a decompression bomb
    (a small file of a huge image) is refused before it is decoded, whichever decoder runs."""
    return budget.limit_bytes() // BYTES_PER_PIXEL


def _check_size(width: int, height: int, name: str) -> None:
    if not 0 < width * height <= max_pixels():
        raise DataError(f"{name}: a {width}x{height} image is too large to read within the memory budget of "
                        f"{budget.size_text(budget.limit_bytes())} (at most {max_pixels():,} pixels); make it "
                        "smaller, or raise the budget (--memory-budget MB)")


def _read_with_pillow(path, PIL):
    try:
        with PIL.Image.open(path) as image:
            _check_size(*image.size, str(path))   # read from the header: nothing decoded yet
            image.load()
            grey = image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F")
            if image.mode in ("I", "I;16", "I;16B", "F"):
                image = image.point(lambda v: v / 256)  # 16-bit grey: keep the high byte
            return np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise DataError(f"{path} cannot be read as an image: {error}") from None


def decode_png(data: bytes, name: str = "PNG") -> np.ndarray:
    """Decode PNG bytes: uint8 (H, W) grey or (H, W, 3) R, G, B. ``DataError`` if unreadable."""
    if not data.startswith(PNG_SIGNATURE):
        raise DataError(f"{name} is not a PNG file")
    header, palette, compressed = _chunks(data, name)
    width, height, depth, colour, compression, filtering, interlace = header
    if colour not in _COLOUR_TYPES or depth not in _COLOUR_TYPES[colour][2]:
        raise DataError(f"{name}: invalid PNG (colour type {colour} with bit depth {depth})")
    if compression or filtering:
        raise DataError(f"{name}: invalid PNG (unknown compression or filter method)")
    if interlace:
        raise DataError(f"{name} is an interlaced PNG, which pi-backprop reads only with Pillow: "
                        f"save it without interlacing, or {PILLOW_HINT}")
    _check_size(width, height, name)
    samples = _COLOUR_TYPES[colour][1]
    stride = (width * samples * depth + 7) // 8
    raw = _inflate(compressed, height * (stride + 1), name)
    rows = _unfilter(raw, height, stride, max(1, samples * depth // 8), name)
    pixels = _samples(rows, width, samples, depth)          # (H, W, samples) uint8/uint16
    if colour == 3:
        if palette is None:
            raise DataError(f"{name}: invalid PNG (palette image without a palette)")
        if pixels.max(initial=0) >= len(palette):
            raise DataError(f"{name}: invalid PNG (palette index out of range)")
        return palette[pixels[..., 0]]
    if depth == 16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif depth < 8:
        pixels = (pixels.astype(np.uint16) * 255 // (2 ** depth - 1)).astype(np.uint8)
    if colour in (0, 4):
        return np.ascontiguousarray(pixels[..., 0])
    return np.ascontiguousarray(pixels[..., :3])


def _chunks(data, name):
    """(IHDR fields, palette uint8 (n, 3) or None, concatenated IDAT bytes); CRCs checked."""
    position, header, palette, idat = len(PNG_SIGNATURE), None, None, []
    while True:
        if position + 8 > len(data):
            raise DataError(f"{name} is truncated (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        crc = data[position + 8 + length:position + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise DataError(f"{name} is truncated (chunk {kind!r})")
        if zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise DataError(f"{name} is damaged (CRC mismatch in chunk {kind.decode('latin-1')!r})")
        position += 12 + length
        if kind == b"IHDR":
            if length != 13:
                raise DataError(f"{name}: invalid PNG (IHDR of {length} bytes)")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            if length % 3 or not length:
                raise DataError(f"{name}: invalid PNG (palette of {length} bytes)")
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None or not idat:
        raise DataError(f"{name}: invalid PNG (no IHDR or no image data)")
    return header, palette, b"".join(idat)


def _inflate(compressed, expected, name):
    inflater = zlib.decompressobj()
    try:
        # max_length: never inflate more than the image can hold (a zip bomb stops here).
        raw = inflater.decompress(compressed, expected)
    except zlib.error as error:
        raise DataError(f"{name} is damaged (image data: {error})") from None
    if len(raw) < expected:
        raise DataError(f"{name} is truncated (image data holds {len(raw)} of {expected} bytes)")
    return raw


def _unfilter(raw, height, stride, bpp, name) -> np.ndarray:
    """Undo PNG's per-row filters (PNG spec section 9): uint8 (height, stride)."""
    out = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.uint8)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        row = np.frombuffer(raw, np.uint8, stride, start + 1)
        if kind == 0:
            current = row.copy()
        elif kind == 1:       # Sub: add the byte bpp to the left; a wrapping running sum per channel
            current = np.cumsum(_padded(row, bpp).reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)[:stride]
        elif kind == 2:       # Up
            current = row + previous
        elif kind in (3, 4):  # Average and Paeth depend on the byte just decoded: one at a time
            current = np.frombuffer(_unfilter_sequential(kind, row.tobytes(), previous.tobytes(), bpp),
                                    np.uint8)
        else:
            raise DataError(f"{name} is damaged (unknown filter {kind} on row {y})")
        out[y] = current
        previous = out[y]
    return out


def _padded(row, bpp):
    extra = (-len(row)) % bpp
    return np.concatenate([row, np.zeros(extra, np.uint8)]) if extra else row


def _unfilter_sequential(kind, row, above, bpp) -> bytearray:
    current = bytearray(row)
    for i in range(len(current)):
        left = current[i - bpp] if i >= bpp else 0
        up = above[i]
        if kind == 3:
            current[i] = (current[i] + ((left + up) >> 1)) & 0xFF
        else:
            upper_left = above[i - bpp] if i >= bpp else 0
            estimate = left + up - upper_left
            distance_left, distance_up = abs(estimate - left), abs(estimate - up)
            distance_upper_left = abs(estimate - upper_left)
            if distance_left <= distance_up and distance_left <= distance_upper_left:
                predictor = left
            elif distance_up <= distance_upper_left:
                predictor = up
            else:
                predictor = upper_left
            current[i] = (current[i] + predictor) & 0xFF
    return current


def _samples(rows, width, samples, depth) -> np.ndarray:
    """Unfiltered rows -> (H, W, samples): uint16 for 16-bit, uint8 otherwise."""
    height = len(rows)
    if depth == 8:
        return rows[:, :width * samples].reshape(height, width, samples)
    if depth == 16:
        return rows[:, :width * samples * 2].reshape(height, width, samples, 2).astype(np.uint16) @ \
            np.array([256, 1], np.uint16)
    bits = np.unpackbits(rows, axis=1)[:, :width * depth].reshape(height, width, depth)
    weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
    return (bits @ weights).astype(np.uint8)[..., None]
