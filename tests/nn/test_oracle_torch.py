"""PyTorch as the independent oracle: the same network with the same weights, in float64,
must give the same outputs, loss, parameter gradients, dL/dx and optimizer trajectories.

Agreement metric, per tensor: max|ours − torch| / max(max|torch|, 1e-12), i.e. the largest
absolute difference relative to the tensor's own scale (as ``pb.gradcheck`` measures). The
contract is 1e-6; in float64 both sides are exact formulas, so the measured errors are
rounding-level (~1e-15), and any bug in a formula shows up as O(1).
"""

import numpy as np
import pytest

import pi_backprop as pb

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOLERANCE = 1e-6


def relative_error(ours, theirs) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape, f"shape {ours.shape} vs torch {theirs.shape}"
    scale = max(float(np.max(np.abs(theirs))), 1e-12)
    return float(np.max(np.abs(ours - theirs)) / scale)


def assert_close(ours, theirs, what):
    error = relative_error(ours, theirs)
    assert error < TOLERANCE, f"{what}: relative error {error:.2e} against torch"


# -- the same network in torch ---------------------------------------------------------------

def to_torch(model):
    """A float64 ``torch.nn.Sequential`` holding copies of ``model``'s current weights.

    Returns (torch model, {"<layer index>.<W|b>": torch parameter}).
    """
    modules, named = [], {}
    for index, layer in enumerate(model.layers):
        if isinstance(layer, pb.Dense):
            module = torch.nn.Linear(layer.in_features, layer.out_features)
            weight = layer.params["W"].T  # ours (in, out); torch (out, in)
        elif isinstance(layer, pb.Conv2D):
            module = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                     stride=layer.stride, padding=layer.padding)
            weight = layer.params["W"]    # both (F, C, kh, kw)
        elif isinstance(layer, pb.MaxPool2D):
            module = torch.nn.MaxPool2d(layer.pool_size, stride=layer.stride)
        elif isinstance(layer, pb.AvgPool2D):
            module = torch.nn.AvgPool2d(layer.pool_size, stride=layer.stride)
        elif isinstance(layer, pb.GlobalAvgPool2D):
            module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        elif isinstance(layer, pb.Dropout):
            module = OurMask(layer)
        elif isinstance(layer, pb.Flatten):
            module = torch.nn.Flatten()
        else:
            module = {pb.ReLU: torch.nn.ReLU, pb.Sigmoid: torch.nn.Sigmoid, pb.Tanh: torch.nn.Tanh}[type(layer)]()
        module = module.double()
        if layer.params:
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(np.array(weight, dtype=np.float64)))
                module.bias.copy_(torch.from_numpy(np.array(layer.params["b"], dtype=np.float64)))
            named[f"{index}.W"], named[f"{index}.b"] = module.weight, module.bias
        modules.append(module)
    return torch.nn.Sequential(*modules), named


class OurMask(torch.nn.Module):
    """Inverted dropout as its formula, y = x ⊙ mask, with the mask our layer draws for this
    batch at its current step (torch's own Dropout draws from torch's generator)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return x * torch.from_numpy(self.layer.mask(tuple(x.shape), np.float64))


def torch_grad_as_ours(name, grad):
    """Torch's gradient in our layout (Dense W is transposed)."""
    grad = grad.detach().numpy()
    return grad.T if name.endswith(".W") and grad.ndim == 2 else grad


def torch_loss(kind, y, t):
    """The reference loss: mean over the batch, as pi-backprop defines it."""
    if kind == "ce":
        # int labels -> class indices; (N, C) float -> class probabilities (torch >= 1.10).
        return F.cross_entropy(y, torch.from_numpy(t))
    target = torch.from_numpy(t)
    if target.ndim == 1:
        target = F.one_hot(target, y.shape[1]).double()
    return F.mse_loss(y, target, reduction="sum") / 2 / y.shape[0]


def our_loss(kind):
    return pb.SoftmaxCrossEntropy() if kind == "ce" else pb.MSELoss()


# -- architectures ---------------------------------------------------------------------------

def shipped(name):
    def build(seed):
        return pb.load_model(name, seed=seed, dtype=np.float64)
    return build


def odd_cnn(seed):
    """Non-square input and kernels, stride 2 and (1, 2), padding 0/1/2, channels > 1,
    overlapping max-pool (stride 1 < pool 2)."""
    return pb.Sequential([
        pb.Conv2D(2, 3, (3, 2), stride=2, padding=1), pb.Tanh(),
        pb.MaxPool2D(2, stride=1),
        pb.Conv2D(3, 4, (2, 3), stride=(1, 2), padding=2), pb.ReLU(),
        pb.Flatten(), pb.Dense(4 * 6 * 3, 5),
    ], seed=seed, dtype=np.float64, input_shape=(2, 7, 9))


def strided_pool_cnn(seed):
    """Pool with stride > pool (gaps between windows), non-square pool, padding 0, sigmoid."""
    return pb.Sequential([
        pb.Conv2D(3, 2, 3, padding=0), pb.Sigmoid(),
        pb.MaxPool2D((2, 3), stride=3),
        pb.Conv2D(2, 3, 1), pb.Tanh(),
        pb.Flatten(), pb.Dense(3 * 3 * 2, 4), pb.Sigmoid(),
    ], seed=seed, dtype=np.float64, input_shape=(3, 11, 8))


def small_data_cnn(seed):
    """Average pools (tiling and overlapping), dropout, a global average before the last layer."""
    return pb.Sequential([
        pb.Conv2D(2, 4, 3, padding=1), pb.ReLU(), pb.AvgPool2D(2), pb.Dropout(0.3),
        pb.Conv2D(4, 5, (2, 3), padding=1), pb.Tanh(), pb.AvgPool2D((2, 2), stride=1),
        pb.GlobalAvgPool2D(), pb.Dropout(0.5), pb.Dense(5, 3),
    ], seed=seed, dtype=np.float64, input_shape=(2, 8, 9))


def tanh_mlp(seed):
    return pb.Sequential([pb.Dense(6, 9), pb.Tanh(), pb.Dense(9, 5), pb.Sigmoid(), pb.Dense(5, 3)],
                         seed=seed, dtype=np.float64)


# (id, builder, input shape per sample, loss kind, targets: "int" | "onehot" | "real", batch sizes)
ARCHITECTURES = [
    ("sensor_mlp", shipped("sensor_mlp"), (32,), "ce", "int", 5),
    ("camera_cnn", shipped("camera_cnn"), (1, 28, 28), "ce", "onehot", 2),
    ("seed_mlp", shipped("seed_mlp"), (784,), "mse", "int", 3),
    ("odd_cnn_b1", odd_cnn, (2, 7, 9), "ce", "int", 1),
    ("odd_cnn_b4", odd_cnn, (2, 7, 9), "mse", "real", 4),
    ("strided_pool_b3", strided_pool_cnn, (3, 11, 8), "mse", "onehot", 3),
    ("strided_pool_b1", strided_pool_cnn, (3, 11, 8), "ce", "onehot", 1),
    ("tanh_mlp", tanh_mlp, (6,), "ce", "int", 4),
    ("small_data_b4", small_data_cnn, (2, 8, 9), "ce", "int", 4),
    ("small_data_b1", small_data_cnn, (2, 8, 9), "mse", "onehot", 1),
]


def make_batch(rng, input_shape, classes, targets, batch):
    x = rng.normal(size=(batch,) + input_shape)
    labels = rng.integers(0, classes, size=batch)
    if targets == "int":
        return x, labels
    if targets == "onehot":
        return x, np.eye(classes)[labels]
    return x, rng.uniform(size=(batch, classes))


@pytest.mark.parametrize("name, build, input_shape, kind, targets, batch", ARCHITECTURES,
                         ids=[a[0] for a in ARCHITECTURES])
def test_forward_loss_gradients_match_torch(backend, rng, name, build, input_shape, kind, targets, batch):
    model = build(seed=7)
    reference, reference_params = to_torch(model)
    classes = model.output_shapes[-1][0]
    x, t = make_batch(rng, input_shape, classes, targets, batch)
    loss = our_loss(kind)

    y = model.forward(x)
    value = loss.forward(y, t)
    dx = model.backward(loss.backward())

    x_torch = torch.from_numpy(x).requires_grad_(True)
    y_torch = reference(x_torch)
    value_torch = torch_loss(kind, y_torch, t)
    value_torch.backward()

    assert y.dtype == np.float64 and dx.dtype == np.float64
    assert_close(y, y_torch, "outputs")
    assert abs(value - value_torch.item()) <= TOLERANCE * abs(value_torch.item()), (value, value_torch.item())
    assert_close(dx, x_torch.grad, "dL/dx")
    ours = dict(model.named_gradients())
    assert sorted(ours) == sorted(reference_params)
    for key, parameter in reference_params.items():
        assert_close(ours[key], torch_grad_as_ours(key, parameter.grad), f"gradient {key}")


@pytest.mark.parametrize("kind", ["ce", "mse"])
def test_int_labels_and_one_hot_give_the_same_loss_and_gradient(rng, kind):
    """Both target forms, checked against torch's two target forms."""
    y = rng.normal(size=(4, 5)) * 3
    labels = np.array([0, 4, 2, 4])
    results = []
    for t in (labels, np.eye(5)[labels]):
        loss = our_loss(kind)
        value, grad = loss.forward(y, t), loss.backward()
        y_torch = torch.from_numpy(y).requires_grad_(True)
        value_torch = torch_loss(kind, y_torch, t)
        value_torch.backward()
        assert abs(value - value_torch.item()) <= 1e-12 * abs(value_torch.item())
        assert_close(grad, y_torch.grad, "dL/dy")
        results.append((value, grad))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-15)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("rows", ["smoothed", "unnormalised"])
def test_cross_entropy_with_real_targets_matches_torch_probability_targets(rng, rows):
    """Label smoothing (rows sum to 1) and rows that do not sum to 1: value and gradient
    must still be each other's derivative, as torch's probability targets are."""
    y = rng.normal(size=(3, 4)) * 2
    t = np.full((3, 4), 0.05) + 0.8 * np.eye(4)[[0, 3, 1]] if rows == "smoothed" else rng.uniform(size=(3, 4))
    loss = pb.SoftmaxCrossEntropy()
    value, grad = loss.forward(y, t), loss.backward()
    y_torch = torch.from_numpy(y).requires_grad_(True)
    value_torch = F.cross_entropy(y_torch, torch.from_numpy(t))
    value_torch.backward()
    assert value == pytest.approx(value_torch.item(), rel=1e-12)
    assert_close(grad, y_torch.grad, "dL/dy")


def test_cross_entropy_is_stable_for_huge_logits():
    y = np.array([[1000.0, 0.0, -1000.0], [-800.0, 800.0, 790.0]])
    t = np.array([0, 2])
    loss = pb.SoftmaxCrossEntropy()
    value, grad = loss.forward(y, t), loss.backward()
    y_torch = torch.from_numpy(y).requires_grad_(True)
    value_torch = F.cross_entropy(y_torch, torch.from_numpy(t))
    value_torch.backward()
    assert np.isfinite(value) and value == pytest.approx(value_torch.item(), rel=1e-12)
    assert_close(grad, y_torch.grad, "dL/dy")


# -- optimizers ------------------------------------------------------------------------------

OPTIMIZERS = [
    ("sgd", dict(lr=0.1), dict(lr=0.1)),
    ("sgd_momentum", dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9)),
    ("sgd_decay", dict(lr=0.05, weight_decay=0.01), dict(lr=0.05, weight_decay=0.01)),
    ("sgd_momentum_decay", dict(lr=0.05, momentum=0.8, weight_decay=0.05),
     dict(lr=0.05, momentum=0.8, weight_decay=0.05)),
    ("adam", dict(), dict(lr=1e-3)),
    ("adam_custom", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-4), dict(lr=0.02, betas=(0.8, 0.95), eps=1e-4)),
    ("adamw", dict(), dict(lr=1e-3)),      # both default to weight_decay 0.01
    ("adamw_custom", dict(lr=0.02, weight_decay=0.5, betas=(0.8, 0.95)), dict(lr=0.02, weight_decay=0.5,
                                                                               betas=(0.8, 0.95))),
]
OURS = {"sgd": pb.SGD, "adam": pb.Adam, "adamw": pb.AdamW}
THEIRS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
STEPS = 6
# Cross-entropy with real targets whose rows do not sum to 1.
SOFT_TARGETS = ("tanh_mlp_soft", tanh_mlp, (6,), "ce", "real", 4)


@pytest.mark.parametrize("kind, ours_kwargs, torch_kwargs", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
@pytest.mark.parametrize("name, build, input_shape, loss_kind, targets, batch",
                         [ARCHITECTURES[i] for i in (0, 4, 8)] + [SOFT_TARGETS],
                         ids=["sensor_mlp", "odd_cnn", "small_data_cnn", "tanh_mlp_soft_targets"])
def test_optimizer_trajectory_matches_torch(backend, rng, kind, ours_kwargs, torch_kwargs,
                                            name, build, input_shape, loss_kind, targets, batch):
    model = build(seed=11)
    reference, reference_params = to_torch(model)
    family = kind.split("_")[0]
    optimizer = OURS[family](model, **ours_kwargs)
    torch_optimizer = THEIRS[family](reference.parameters(), **torch_kwargs)
    classes = model.output_shapes[-1][0]
    loss = our_loss(loss_kind)
    for _ in range(STEPS):
        x, t = make_batch(rng, input_shape, classes, targets, batch)
        value = model.train_step(x, t, loss, optimizer)
        torch_optimizer.zero_grad()
        value_torch = torch_loss(loss_kind, reference(torch.from_numpy(x)), t)
        value_torch.backward()
        torch_optimizer.step()
        assert value == pytest.approx(value_torch.item(), rel=TOLERANCE)
    ours = dict(model.named_parameters())
    for key, parameter in reference_params.items():
        assert_close(ours[key], torch_grad_as_ours(key, parameter), f"parameter {key} after {STEPS} steps")
    assert optimizer.step_count == STEPS
