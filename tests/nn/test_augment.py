"""Augmentation: a pure function of (seed, step, position in the batch), the same pixels on
both backends, each kind of change doing what it says, and one-line errors for bad tables."""

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop.exc import ConfigError
from pi_backprop.nn.augment import Augment

IMAGE = (1, 12, 10)
EVERYTHING = {"shift": 2, "hflip": True, "brightness": 0.3, "contrast": 0.4, "noise": 0.05, "rotate": 15,
              "scale": 0.2}


@pytest.fixture
def images(rng):
    return rng.uniform(0, 1, size=(9,) + IMAGE).astype(np.float32)


def augmented(table, x, seed=0, step=0, shape=None):
    return Augment.from_table(table, shape or x.shape[1:]).apply(x, seed, step)


@pytest.mark.parametrize("table", [{"shift": 3}, {"shift": 2, "hflip": True}, {"contrast": 0.5, "brightness": 0.5},
                                   {"noise": 0.1}, {"rotate": 20}, {"scale": 0.3, "shift": 1}, EVERYTHING],
                         ids=lambda t: "+".join(t))
@pytest.mark.parametrize("shape", [(1, 12, 10), (3, 7, 9)])
def test_both_backends_give_the_same_pixels(numpy_backend, rng, table, shape):
    x = rng.uniform(0, 1, size=(5,) + shape).astype(np.float32)
    results = []
    for backend in ("numpy", "numba"):
        pb.set_backend(backend)
        results.append(augmented(table, x, seed=3, step=11))
    assert results[0].dtype == np.float32 and results[0].shape == x.shape
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], x)


def test_a_pure_function_of_seed_step_and_position(images):
    first = augmented(EVERYTHING, images, seed=1, step=5)
    np.testing.assert_array_equal(first, augmented(EVERYTHING, images, seed=1, step=5))
    assert not np.array_equal(first, augmented(EVERYTHING, images, seed=1, step=6))
    assert not np.array_equal(first, augmented(EVERYTHING, images, seed=2, step=5))
    # sample n's change depends on its position, not on the batch's size or the others' pixels
    head = augmented(EVERYTHING, images[:4], seed=1, step=5)
    np.testing.assert_array_equal(head, first[:4])
    others = images.copy()
    others[4:] = 0.5
    np.testing.assert_array_equal(augmented(EVERYTHING, others, seed=1, step=5)[:4], first[:4])


def test_nothing_set_returns_the_batch_itself(images):
    augment = Augment.from_table({"shift": 0, "hflip": False}, IMAGE)
    assert not augment and augment.apply(images, 0, 0) is images


def test_shift_moves_the_picture_by_whole_pixels_and_repeats_the_edge():
    x = np.zeros((200, 1, 12, 10), np.float32)
    x[:, 0, 6, 5] = 1.0
    y = augmented({"shift": 2}, x)
    moves = set()
    for sample in y[:, 0]:
        (row,), (col,) = np.nonzero(sample)
        moves.add((row - 6, col - 5))
        assert sample.sum() == 1.0          # whole pixels: nothing blurred, nothing lost
    assert moves == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    edge = np.tile(np.arange(10, dtype=np.float32), (1, 1, 12, 1))     # columns 0..9
    shifted = augmented({"shift": 3}, np.repeat(edge, 50, axis=0))[:, 0]
    for sample in shifted:              # column j shows column j − dx, the edge's value beyond the frame
        dx = 5 - int(sample[0, 5])
        np.testing.assert_array_equal(sample, np.tile(np.clip(np.arange(10) - dx, 0, 9), (12, 1)))


def test_hflip_mirrors_about_half_the_samples(images):
    y = augmented({"hflip": True}, np.repeat(images[:1], 400, axis=0))
    mirrored = [np.array_equal(sample, images[0, :, :, ::-1]) for sample in y]
    kept = [np.array_equal(sample, images[0]) for sample in y]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 150 < sum(mirrored) < 250


def test_brightness_contrast_and_noise_keep_to_their_bounds(rng):
    x = rng.uniform(0.2, 0.8, size=(300,) + IMAGE)
    ratio = augmented({"brightness": 0.25}, x) / x
    per_sample = ratio.reshape(300, -1)
    assert np.allclose(per_sample, per_sample[:, :1])                      # one factor per sample
    assert per_sample.min() >= 0.75 - 1e-12 and per_sample.max() <= 1.25 + 1e-12
    assert per_sample.max() - per_sample.min() > 0.4                       # and it spreads over the range
    contrasted = augmented({"contrast": 0.5}, x)
    np.testing.assert_allclose(contrasted.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-12)
    spread = contrasted.std(axis=(1, 2, 3)) / x.std(axis=(1, 2, 3))
    assert spread.min() >= 0.5 - 1e-9 and spread.max() <= 1.5 + 1e-9
    noise = augmented({"noise": 0.1}, x) - x
    assert abs(noise.std() - 0.1) < 0.005 and abs(noise.mean()) < 0.005
    assert abs(np.corrcoef(noise[:, 0, :, :-1].ravel(), noise[:, 0, :, 1:].ravel())[0, 1]) < 0.05


def test_rotate_and_scale_turn_the_picture_about_its_centre():
    centre = np.zeros((50, 1, 21, 21))
    centre[:, 0, 10, 10] = 1.0
    np.testing.assert_allclose(augmented({"rotate": 30}, centre)[:, 0, 10, 10], 1.0)   # the centre stays
    x = np.zeros((100, 1, 21, 21))
    x[:, 0, 9:12, 17:20] = 1.0              # a spot 8 px right of the centre moves on a circle
    angles = []
    for sample in augmented({"rotate": 30}, x)[:, 0]:
        rows, cols = np.indices(sample.shape)
        mass = sample.sum()
        r, c = (sample * rows).sum() / mass - 10, (sample * cols).sum() / mass - 10
        assert abs(np.hypot(r, c) - 8) < 0.3
        angles.append(np.degrees(np.arctan2(-r, c)))
    assert max(np.abs(angles)) <= 30.5 and max(angles) - min(angles) > 40
    radii = []
    for sample in augmented({"scale": 0.25}, x)[:, 0]:
        rows, cols = np.indices(sample.shape)
        mass = sample.sum()
        radii.append((sample * cols).sum() / mass - 10)
    assert 8 * 0.75 - 0.3 <= min(radii) and max(radii) <= 8 * 1.25 + 0.3 and max(radii) - min(radii) > 2


def test_turning_one_kind_on_leaves_the_others_draws(images):
    shifted = augmented({"shift": 2}, images, step=4)
    brighter = augmented({"shift": 2, "brightness": 0.3}, images, step=4)
    factor = brighter.reshape(9, -1).sum(axis=1) / shifted.reshape(9, -1).sum(axis=1)
    np.testing.assert_allclose(brighter, shifted * factor[:, None, None, None], rtol=1e-6)


def test_sensor_windows_time_shift_gain_and_noise(rng):
    x = np.tile(np.arange(32, dtype=np.float32), (400, 1))
    shifted = augmented({"time_shift": 3}, x)
    offsets = {int(row[16] - 16) for row in shifted}
    assert offsets == {-3, -2, -1, 0, 1, 2, 3}
    assert set(np.unique(shifted)) <= set(range(32))
    gained = augmented({"gain": 0.2}, x + 1)
    factors = (gained / (x + 1))[:, 0]
    assert factors.min() >= 0.8 - 1e-6 and factors.max() <= 1.2 + 1e-6 and factors.std() > 0.05
    noise = augmented({"noise": 0.5}, x) - x
    assert abs(noise.std() - 0.5) < 0.03


@pytest.mark.parametrize("table, shape, message", [
    ({"shift": -1}, IMAGE, "augment.shift must be a number from 0 to 64, got -1"),
    ({"shift": 1.5}, IMAGE, "augment.shift must be a whole number >= 0, got 1.5"),
    ({"hflip": 1}, IMAGE, "augment.hflip must be true or false, got 1"),
    ({"brightness": 1.5}, IMAGE, "augment.brightness must be a number from 0 to 0.99, got 1.5"),
    ({"noise": float("nan")}, IMAGE, "augment.noise must be a number from 0 to 10, got nan"),
    ({"blur": 1}, IMAGE, "augment.blur: unknown key; known keys: shift, hflip"),
    ({"time_shift": 2}, IMAGE, "augment.time_shift: it applies to sensor windows, and this model's input is an image"),
    ({"rotate": 5}, (32,), "augment.rotate: it applies to images, and this model's input is a window of 32 values"),
])
def test_a_bad_table_is_one_line_naming_the_key(table, shape, message):
    with pytest.raises(ConfigError) as error:
        Augment.from_table(table, shape)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
