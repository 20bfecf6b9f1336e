"""Backprop against float64 central differences, for every layer type and both backends."""

import numpy as np
import pytest

import pi_backprop as pb

TOLERANCE = 1e-6


def check(model, loss, x, t):
    errors = pb.gradcheck(model, loss, x, t, eps=1e-6)
    assert errors, "gradcheck found no parameters"
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{worst}: relative error {errors[worst]:.2e}"
    return errors


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("activation", [pb.ReLU, pb.Sigmoid, pb.Tanh])
def test_dense_stack(backend, rng, batch, activation):
    model = pb.Sequential([pb.Dense(5, 7), activation(), pb.Dense(7, 3)], seed=1, dtype=np.float64)
    check(model, pb.SoftmaxCrossEntropy(), rng.normal(size=(batch, 5)), rng.integers(0, 3, batch))


def test_sigmoid_mse_one_hot_targets(backend, rng):
    model = pb.Sequential([pb.Dense(4, 6), pb.Sigmoid(), pb.Dense(6, 2), pb.Sigmoid()], seed=2, dtype=np.float64)
    check(model, pb.MSELoss(), rng.normal(size=(4, 4)), rng.uniform(size=(4, 2)))


CONV_CASES = [
    # (N, C, H, W), out_channels, kernel, stride, padding
    ((1, 1, 5, 5), 2, 3, 1, 0),
    ((2, 3, 6, 5), 4, (3, 2), 1, 1),
    ((2, 2, 7, 7), 3, 3, 2, 0),
    ((1, 2, 6, 8), 2, (2, 3), (2, 1), 2),
    ((3, 1, 4, 4), 1, 1, 1, 0),
    ((2, 2, 5, 6), 3, 3, 2, (1, 2)),
]


@pytest.mark.parametrize("shape, out_channels, kernel, stride, padding", CONV_CASES)
def test_conv2d(backend, rng, shape, out_channels, kernel, stride, padding):
    N, C, H, W = shape
    conv = pb.Conv2D(C, out_channels, kernel, stride=stride, padding=padding)
    model = pb.Sequential([conv, pb.Tanh(), pb.Flatten()], seed=3, dtype=np.float64, input_shape=shape[1:])
    outputs = model.output_shapes[-1][0]
    check(model, pb.MSELoss(), rng.normal(size=shape), rng.normal(size=(N, outputs)))


POOL_CASES = [((2, 2, 4, 4), 2, None), ((1, 3, 5, 7), (2, 3), None), ((2, 1, 6, 6), 3, 2), ((1, 2, 5, 5), 2, 1)]


@pytest.mark.parametrize("shape, pool, stride", POOL_CASES)
def test_maxpool(backend, rng, shape, pool, stride):
    N, C, H, W = shape
    model = pb.Sequential([pb.Conv2D(C, 2, 2, padding=1), pb.MaxPool2D(pool, stride), pb.Flatten()],
                          seed=4, dtype=np.float64, input_shape=shape[1:])
    outputs = model.output_shapes[-1][0]
    check(model, pb.MSELoss(), rng.normal(size=shape), rng.normal(size=(N, outputs)))


@pytest.mark.parametrize("shape, pool, stride", POOL_CASES)
def test_avgpool(backend, rng, shape, pool, stride):
    N, C, H, W = shape
    model = pb.Sequential([pb.Conv2D(C, 2, 2, padding=1), pb.AvgPool2D(pool, stride), pb.Flatten()],
                          seed=4, dtype=np.float64, input_shape=shape[1:])
    outputs = model.output_shapes[-1][0]
    check(model, pb.MSELoss(), rng.normal(size=shape), rng.normal(size=(N, outputs)))


def test_global_avgpool_and_dropout(backend, rng):
    """A CNN ending in a global average, with dropout on both sides of it; the gradient
    check's forward passes all draw the mask of one step."""
    model = pb.Sequential([pb.Conv2D(2, 3, 3, padding=1), pb.Tanh(), pb.Dropout(0.4), pb.GlobalAvgPool2D(),
                           pb.Dropout(0.25), pb.Dense(3, 4)], seed=8, dtype=np.float64, input_shape=(2, 5, 6))
    for layer in model.dropouts:
        layer.step = 7
    x = rng.normal(size=(3, 2, 5, 6))
    check(model, pb.SoftmaxCrossEntropy(), x, rng.integers(0, 4, 3))
    model.forward(x)
    assert 0 < (model.dropouts[0].mask_used == 0).mean() < 1, "some units dropped, not all"


@pytest.mark.parametrize("name", ["sensor_mlp", "camera_cnn", "seed_mlp"])
def test_shipped_models(backend, rng, name):
    definition = pb.load_definition(name)
    model = definition.build(seed=5, dtype=np.float64)
    x = rng.normal(size=(2,) + definition.input_shape)
    check(model, definition.make_loss(), x, rng.integers(0, len(definition.classes), 2))


def test_input_gradient_matches_finite_differences(backend, rng):
    """backward() returns dL/dx: check it too, through conv, pool and dense."""
    model = pb.Sequential([pb.Conv2D(1, 2, 3, padding=1), pb.ReLU(), pb.MaxPool2D(2), pb.Flatten(), pb.Dense(8, 3)],
                          seed=6, dtype=np.float64, input_shape=(1, 4, 4))
    loss, x, t = pb.SoftmaxCrossEntropy(), rng.normal(size=(2, 1, 4, 4)), np.array([0, 2])
    loss.forward(model.forward(x), t)
    dx = model.backward(loss.backward())
    from pi_backprop.nn.gradcheck import numerical_gradient, relative_error
    numeric = numerical_gradient(lambda: loss.forward(model.forward(x), t), x, 1e-6)
    assert dx.shape == x.shape
    assert relative_error(dx, numeric) < TOLERANCE
