"""Learning tests: the whole loop (forward, loss, backward, optimizer) actually learns.

Gradient checks prove each derivative; these prove the pieces are wired together in the
right direction and with the right signs, in the default float32.
"""

import numpy as np
import pytest

import pi_backprop as pb

XOR_INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_TARGETS = np.array([[0], [1], [1], [0]], dtype=np.float32)


@pytest.mark.parametrize("hidden", [2, 4])
def test_xor_with_sigmoid_and_mse(backend, hidden):
    """The classic: sigmoid units, E = ½Σ(y − t)², plain full-batch gradient descent."""
    model = pb.Sequential([pb.Dense(2, hidden), pb.Sigmoid(), pb.Dense(hidden, 1), pb.Sigmoid()], seed=0)
    loss, optimizer = pb.MSELoss(), pb.SGD(model, lr=2.0)
    first = loss.forward(model.predict(XOR_INPUTS), XOR_TARGETS)
    for _ in range(4000):
        last = model.train_step(XOR_INPUTS, XOR_TARGETS, loss, optimizer)
    y = model.predict(XOR_INPUTS)[:, 0]
    assert y.dtype == np.float32
    assert last < first / 10, (first, last)
    np.testing.assert_array_equal(y > 0.5, XOR_TARGETS[:, 0] > 0.5, err_msg=f"outputs {y}")


def bars(rng, count, size=8):
    """Noisy 1×size×size images of one horizontal (label 0) or vertical (label 1) bar.

    Bars are 3..size pixels long at a random row/column and offset, on Gaussian noise, so
    neither a single pixel nor the image mean gives the answer away.
    """
    labels = rng.integers(0, 2, count)
    images = rng.normal(0, 0.3, size=(count, 1, size, size)).astype(np.float32)
    for image, label in zip(images, labels):
        length = rng.integers(3, size + 1)
        line, start = rng.integers(0, size), rng.integers(0, size - length + 1)
        if label == 0:
            image[0, line, start:start + length] += 1
        else:
            image[0, start:start + length, line] += 1
    return images, labels


def test_cnn_learns_bar_orientation_to_high_held_out_accuracy(backend):
    rng = np.random.default_rng(0)
    x_train, t_train = bars(rng, 1024)
    x_test, t_test = bars(rng, 400)
    model = pb.Sequential([
        pb.Conv2D(1, 8, 3, padding=1), pb.ReLU(), pb.MaxPool2D(2),
        pb.Flatten(), pb.Dense(8 * 4 * 4, 2),
    ], seed=0)
    loss, optimizer = pb.SoftmaxCrossEntropy(), pb.Adam(model, lr=0.02)
    chance = np.mean(model.predict(x_test).argmax(axis=1) == t_test)
    for epoch in range(8):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            model.train_step(x_train[batch], t_train[batch], loss, optimizer)
    accuracy = np.mean(model.predict(x_test).argmax(axis=1) == t_test)
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.3f} (before training {chance:.3f})"
