"""frame_to_input: shapes, ranges, crop geometry, channel order, resizing."""

import numpy as np
import pytest

from pi_backprop.exc import ShapeError
from pi_backprop.hardware.preprocess import area_weights, crop_box, frame_to_input


@pytest.mark.parametrize("frame_shape, input_shape", [
    ((240, 320, 3), (1, 28, 28)),
    ((240, 320, 3), (3, 28, 28)),
    ((240, 320), (1, 16, 24)),
    ((240, 320), (3, 10, 10)),
    ((5, 240, 320, 3), (1, 28, 28)),
    ((480, 640, 4), (3, 32, 32)),
    ((20, 20, 3), (1, 40, 40)),       # upscaling works too
])
def test_shapes_dtype_and_range(rng, frame_shape, input_shape):
    frame = rng.integers(0, 256, frame_shape, dtype=np.uint8)
    x = frame_to_input(frame, input_shape)
    batch = frame_shape[:1] if len(frame_shape) == 4 else ()
    assert x.shape == batch + input_shape and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize("height, width, aspect, box", [
    (240, 320, 1.0, (0, 40, 240, 240)),
    (240, 320, 4 / 3, (0, 0, 240, 320)),
    (240, 320, 0.5, (0, 100, 240, 120)),
    (240, 320, 2.0, (40, 0, 160, 320)),
    (7, 10, 1.0, (0, 1, 7, 7)),
])
def test_crop_box_is_the_largest_centred_box(height, width, aspect, box):
    assert crop_box(height, width, aspect) == box


def test_centre_crop_keeps_the_middle_of_a_wide_frame():
    frame = np.zeros((240, 320), np.uint8)
    frame[:, :40] = 255                     # a bright band on the left, outside the square crop
    frame[:, -40:] = 255
    frame[100:140, 140:180] = 200           # a square in the middle
    x = frame_to_input(frame, (1, 24, 24))[0]
    assert x[:, 0].max() == 0.0 and x[:, -1].max() == 0.0
    np.testing.assert_allclose(x[10:14, 10:14], 200 / 255, rtol=1e-5)   # 240 -> 24: 10x scale


def test_area_average_of_a_checkerboard_is_grey():
    checker = (np.indices((240, 240)).sum(axis=0) % 2 * 255).astype(np.uint8)
    np.testing.assert_allclose(frame_to_input(checker, (1, 12, 12)), 0.5, atol=1e-6)


@pytest.mark.parametrize("size_in, size_out", [(240, 28), (56, 28), (10, 3), (3, 7)])
def test_area_weights_rows_sum_to_one_and_cover_every_input(size_in, size_out):
    weights = area_weights(size_in, size_out)
    assert weights.shape == (size_out, size_in)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(weights.sum(axis=0) > 0) or size_out > size_in


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.mark.parametrize("name", COLOURS)
@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_channel_order_with_a_known_coloured_frame(name, order):
    rgb = COLOURS[name]
    memory = rgb if order == "RGB" else rgb[::-1]
    frame = np.empty((30, 40, 3), np.uint8)
    frame[...] = memory
    colour = frame_to_input(frame, (3, 6, 6), channel_order=order)
    np.testing.assert_allclose(colour[:, 2, 3], np.array(rgb) / 255, atol=1e-6)
    grey = frame_to_input(frame, (1, 6, 6), channel_order=order)
    luma = {"red": 0.299, "green": 0.587, "blue": 0.114}[name]
    np.testing.assert_allclose(grey, luma, atol=1e-6)


def test_grey_frame_to_colour_model_repeats_the_channel():
    frame = np.full((12, 12), 51, np.uint8)
    np.testing.assert_allclose(frame_to_input(frame, (3, 4, 4)), 0.2, atol=1e-6)


def test_deterministic(rng):
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert np.array_equal(frame_to_input(frame, (1, 28, 28)), frame_to_input(frame.copy(), (1, 28, 28)))


@pytest.mark.parametrize("frame, input_shape, kwargs, message", [
    (np.zeros((10, 10, 3), np.float32), (1, 4, 4), {}, "must be uint8"),
    (np.zeros((10,), np.uint8), (1, 4, 4), {}, r"must be \(H, W\)"),
    (np.zeros((10, 10, 3), np.uint8), (2, 4, 4), {}, r"input_shape \(1 or 3, height, width\)"),
    (np.zeros((10, 10, 3), np.uint8), (32,), {}, "a camera model needs"),
    (np.zeros((10, 10, 3), np.uint8), (1, 4, 4), {"channel_order": "GRB"}, "channel_order must be"),
])
def test_bad_inputs_are_shape_errors(frame, input_shape, kwargs, message):
    with pytest.raises(ShapeError, match=message):
        frame_to_input(frame, input_shape, **kwargs)
