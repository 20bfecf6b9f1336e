"""The public API exactly as issue 2 names it: ``import pi_backprop as pb``."""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop import exc

# name -> the leading parameters as (name, default or REQUIRED); more optional ones may follow.
REQUIRED = inspect.Parameter.empty
SIGNATURES = {
    "Sequential": [("layers", REQUIRED), ("seed", None), ("dtype", np.float32)],
    "Dense": [("in_features", REQUIRED), ("out_features", REQUIRED)],
    "Conv2D": [("in_channels", REQUIRED), ("out_channels", REQUIRED), ("kernel_size", REQUIRED),
               ("stride", 1), ("padding", 0)],
    "MaxPool2D": [("pool_size", REQUIRED), ("stride", None)],
    "Flatten": [], "ReLU": [], "Sigmoid": [], "Tanh": [], "MSELoss": [], "SoftmaxCrossEntropy": [],
    "SGD": [("model", REQUIRED), ("lr", REQUIRED), ("momentum", 0.0), ("weight_decay", 0.0)],
    "Adam": [("model", REQUIRED), ("lr", 1e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8)],
    "AdamW": [("model", REQUIRED), ("lr", 1e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0.01)],
    "AvgPool2D": [("pool_size", REQUIRED), ("stride", None)],
    "GlobalAvgPool2D": [],
    "Dropout": [("p", REQUIRED), ("seed", None)],
    "set_backend": [("name", REQUIRED)],
    "get_backend": [],
    "gradcheck": [("model", REQUIRED), ("loss", REQUIRED), ("x", REQUIRED), ("t", REQUIRED), ("eps", 1e-6)],
    "load_model": [("path_or_name", REQUIRED), ("seed", None)],
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_public_name_and_signature(name):
    assert hasattr(pb, name), f"pb.{name} is missing"
    parameters = list(inspect.signature(getattr(pb, name)).parameters.values())
    expected = SIGNATURES[name]
    leading = [(p.name, p.default) for p in parameters[:len(expected)]]
    assert leading == expected
    for extra in parameters[len(expected):]:
        assert extra.default is not REQUIRED or extra.kind is inspect.Parameter.VAR_KEYWORD, \
            f"pb.{name} has an extra required parameter {extra.name!r}"


@pytest.mark.parametrize("method", ["forward", "backward", "predict", "train_step", "parameters"])
def test_sequential_methods(method):
    assert callable(getattr(pb.Sequential, method))


def small_cnn(dtype=np.float32, seed=0):
    """Every layer type; input (2, 6, 5)."""
    return pb.Sequential([
        pb.Conv2D(2, 3, (3, 2), stride=1, padding=1), pb.ReLU(), pb.MaxPool2D(2),
        pb.Flatten(), pb.Dense(3 * 3 * 3, 4), pb.Tanh(), pb.Dense(4, 3), pb.Sigmoid(),
    ], seed=seed, dtype=dtype, input_shape=(2, 6, 5))


def test_params_and_grads_keys_and_shapes():
    model = small_cnn()
    expected = {0: {"W": (3, 2, 3, 2), "b": (3,)}, 4: {"W": (27, 4), "b": (4,)}, 6: {"W": (4, 3), "b": (3,)}}
    for index, layer in enumerate(model.layers):
        shapes = expected.get(index, {})
        assert {k: v.shape for k, v in layer.params.items()} == shapes, index
        assert {k: v.shape for k, v in layer.grads.items()} == shapes, index
    assert [p.shape for p in model.parameters()] == [s for i in sorted(expected) for s in expected[i].values()]
    assert model.num_parameters == sum(int(np.prod(p.shape)) for p in model.parameters())


def test_writing_params_in_place_takes_effect(backend):
    model = pb.Sequential([pb.Dense(3, 2)], seed=0, dtype=np.float64)
    W, b = np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]), np.array([0.25, -1.0])
    model.layers[0].params["W"][...] = W
    model.layers[0].params["b"][...] = b
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]])
    np.testing.assert_array_equal(model.forward(x), x @ W + b)
    np.testing.assert_array_equal(model.parameter_vector, np.concatenate([W.ravel(), b]))
    model.parameters()[1][...] = 0  # the list holds the same arrays
    np.testing.assert_array_equal(model.predict(x), x @ W)


def test_conv_params_in_place(backend):
    model = pb.Sequential([pb.Conv2D(1, 1, 2)], seed=0, dtype=np.float64, input_shape=(1, 2, 3))
    model.layers[0].params["W"][...] = [[[[1.0, 2.0], [3.0, 4.0]]]]
    model.layers[0].params["b"][...] = 10
    x = np.arange(6.0).reshape(1, 1, 2, 3)  # [[0 1 2] [3 4 5]]
    # cross-correlation: 0·1 + 1·2 + 3·3 + 4·4 + 10 = 37; 1 + 4 + 12 + 20 + 10 = 47
    np.testing.assert_array_equal(model.forward(x), [[[[37.0, 47.0]]]])


def run_backward(model, x, t, loss):
    loss.forward(model.forward(x), t)
    dx = model.backward(loss.backward())
    return dx, {k: v.copy() for k, v in model.named_gradients()}


def test_backward_overwrites_grads(backend, rng):
    model, loss = small_cnn(np.float64), pb.MSELoss()
    x, t = rng.normal(size=(2, 2, 6, 5)), rng.uniform(size=(2, 3))
    dx1, first = run_backward(model, x, t, loss)
    dout = loss.backward()
    dx2 = model.backward(dout)  # a second backward of the same forward: same grads, not double
    for name, grad in model.named_gradients():
        np.testing.assert_array_equal(grad, first[name], err_msg=name)
    np.testing.assert_array_equal(dx1, dx2)
    # Another batch: the grads are that batch's, nothing of the first remains.
    x2, t2 = rng.normal(size=(3, 2, 6, 5)), rng.uniform(size=(3, 3))
    _, second = run_backward(model, x2, t2, loss)
    _, fresh = run_backward(small_cnn(np.float64), x2, t2, pb.MSELoss())
    for name in fresh:
        np.testing.assert_array_equal(second[name], fresh[name], err_msg=name)
        assert np.any(second[name] != first[name]), name


def test_predict_keeps_no_caches(backend, rng):
    model, loss = small_cnn(np.float64), pb.MSELoss()
    x, t = rng.normal(size=(2, 2, 6, 5)), rng.uniform(size=(2, 3))
    expected_dx, expected = run_backward(model, x, t, loss)
    y = model.forward(x)
    loss.forward(y, t)
    dout = loss.backward()
    other = rng.normal(size=(5, 2, 6, 5))  # a different batch size: any cache it left would break backward
    np.testing.assert_array_equal(model.predict(other), small_cnn(np.float64).predict(other))
    dx = model.backward(dout)
    np.testing.assert_array_equal(dx, expected_dx)
    for name, grad in model.named_gradients():
        np.testing.assert_array_equal(grad, expected[name], err_msg=name)
    # predict may run the fused program, which sums in another order than the layer path
    # that forward uses: equal to rounding, not necessarily to the bit.
    np.testing.assert_allclose(model.predict(x), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_everywhere(backend, rng, dtype):
    model = small_cnn(dtype)
    x = rng.normal(size=(2, 2, 6, 5))  # float64 input: converted to the model's dtype
    for loss, t in ((pb.SoftmaxCrossEntropy(), np.array([0, 2])), (pb.MSELoss(), rng.uniform(size=(2, 3)))):
        y = model.forward(x)
        value = loss.forward(y, t)
        dout = loss.backward()
        dx = model.backward(dout)
        assert isinstance(value, float)
        assert {a.dtype for a in (y, dout, dx, model.predict(x))} == {np.dtype(dtype)}
        assert {a.dtype for a in model.parameters()} == {np.dtype(dtype)}
        assert {g.dtype for _, g in model.named_gradients()} == {np.dtype(dtype)}
    assert pb.Sequential([pb.Dense(2, 2)]).dtype == np.float32  # the default


def test_train_step_returns_the_loss_before_the_update(backend, rng):
    model = pb.load_model("sensor_mlp", seed=3)
    x, t = rng.normal(size=(4, 32)), rng.integers(0, 4, 4)
    loss = pb.SoftmaxCrossEntropy()
    expected = loss.forward(model.predict(x), t)
    before = model.parameter_vector.copy()
    value = model.train_step(x, t, loss, pb.SGD(model, lr=0.1))
    assert type(value) is float and value == pytest.approx(expected, rel=1e-6)
    assert loss.forward(model.predict(x), t) < value
    assert np.any(model.parameter_vector != before)


def test_repr_shows_shapes_and_parameter_counts():
    text = repr(pb.load_model("camera_cnn", seed=0))
    for fragment in ["Conv2D(1, 8, kernel_size=3, padding=1)", "(8, 28, 28)", "(8, 14, 14)", "(16, 7, 7)",
                     "(784,)", "(10,)", "80", "1,168", "7,850", "9,098", "MaxPool2D(2)", "Dense(784, 10)"]:
        assert fragment in text, f"{fragment!r} missing from\n{text}"
    assert len(text.splitlines()) == 1 + 1 + 8 + 1  # header, column titles, 8 layers, total


def test_seed_makes_initial_weights_deterministic():
    a, b, c = small_cnn(seed=5), small_cnn(seed=5), small_cnn(seed=6)
    np.testing.assert_array_equal(a.parameter_vector, b.parameter_vector)
    assert np.any(a.parameter_vector != c.parameter_vector)
    np.testing.assert_array_equal(pb.load_model("seed_mlp", seed=1).parameter_vector,
                                  pb.load_model("seed_mlp", seed=1).parameter_vector)
    assert np.all(small_cnn(seed=5).parameter_vector != 0)


def test_default_init_bounds_are_pytorchs():
    """U(−1/√fan_in, 1/√fan_in) for W and b, so recipes copied from PyTorch start alike."""
    dense = pb.Sequential([pb.Dense(400, 30)], seed=0, dtype=np.float64).layers[0]
    conv = pb.Sequential([pb.Conv2D(3, 4, (5, 2))], seed=0, dtype=np.float64, input_shape=(3, 5, 5)).layers[0]
    for layer, fan_in in ((dense, 400), (conv, 3 * 5 * 2)):
        for value in layer.params.values():
            assert np.abs(value).max() <= 1 / np.sqrt(fan_in)
            assert np.abs(value).max() > 0.8 / np.sqrt(fan_in)


@pytest.mark.parametrize("make_optimizer", [
    lambda m: pb.SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda m: pb.Adam(m, lr=0.01, betas=(0.8, 0.99), eps=1e-7),
], ids=["sgd", "adam"])
def test_optimizer_state_round_trip_resumes_exactly(backend, make_optimizer):
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(4, 32)), rng.integers(0, 4, 4)) for _ in range(5)]
    loss = pb.SoftmaxCrossEntropy()
    model = pb.load_model("sensor_mlp", seed=0)
    optimizer = make_optimizer(model)
    for x, t in batches[:3]:
        model.train_step(x, t, loss, optimizer)
    state = optimizer.state_dict()
    assert state["step"] == 3 and all(np.any(v != 0) for v in state["buffers"].values())
    # A resumed copy: same weights, a fresh optimizer with other settings, the state loaded.
    resumed = pb.load_model("sensor_mlp", seed=99)
    resumed.parameter_vector[...] = model.parameter_vector
    resumed_optimizer = type(optimizer)(resumed, lr=0.5)
    resumed_optimizer.load_state_dict(state)
    assert resumed_optimizer.hyper() == optimizer.hyper()
    for name, value in state["buffers"].items():
        value += 1  # the state dict holds copies: changing it changes no optimizer
        assert np.all(resumed_optimizer.buffers[name] != value)
    for x, t in batches[3:]:
        model.train_step(x, t, loss, optimizer)
        resumed.train_step(x, t, loss, resumed_optimizer)
    np.testing.assert_array_equal(resumed.parameter_vector, model.parameter_vector)
    assert resumed_optimizer.step_count == optimizer.step_count == 5


def test_optimizer_state_of_another_kind_is_refused():
    model = pb.load_model("sensor_mlp", seed=0)
    with pytest.raises(exc.CheckpointError, match="'sgd'.*'adam'"):
        pb.Adam(model).load_state_dict(pb.SGD(model, lr=0.1).state_dict())


def test_optimizer_state_of_another_shape_changes_nothing():
    model, other = pb.load_model("sensor_mlp", seed=0), pb.Sequential([pb.Dense(3, 2)], seed=0)
    optimizer = pb.Adam(model, lr=0.01)
    state = pb.Adam(other, lr=0.5).state_dict()
    with pytest.raises(exc.CheckpointError, match="optimizer buffer 'm': expected shape"):
        optimizer.load_state_dict(state)
    assert optimizer.lr == 0.01 and optimizer.step_count == 0

def test_gradcheck_keys(backend, rng):
    model = pb.Sequential([pb.Dense(3, 4), pb.ReLU(), pb.Dense(4, 2)], seed=0, dtype=np.float64)
    errors = pb.gradcheck(model, pb.SoftmaxCrossEntropy(), rng.normal(size=(2, 3)), np.array([0, 1]))
    assert sorted(errors) == ["0.W", "0.b", "2.W", "2.b"]
    assert all(isinstance(v, float) and 0 <= v < 1e-6 for v in errors.values())


def test_load_model_builds_the_shipped_definitions():
    for name, shapes in [("sensor_mlp", [(32, 64), (64,), (64, 32), (32,), (32, 4), (4,)]),
                         ("seed_mlp", [(784, 100), (100,), (100, 10), (10,)]),
                         ("camera_cnn", [(8, 1, 3, 3), (8,), (16, 8, 3, 3), (16,), (784, 10), (10,)])]:
        model = pb.load_model(name, seed=0)
        assert isinstance(model, pb.Sequential) and model.definition.name == name
        assert [p.shape for p in model.parameters()] == shapes
    assert isinstance(pb.load_model("seed_mlp").layers[-1], pb.Sigmoid)
    assert pb.load_definition("seed_mlp").make_loss().__class__ is pb.MSELoss


def test_unknown_backend_leaves_the_current_one(backend):
    with pytest.raises(exc.BackendError) as info:
        pb.set_backend("bogus")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert pb.get_backend() == backend


def python(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "PI_BACKPROP_BACKEND"}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_backend_from_environment(name):
    if name == "numba":
        pytest.importorskip("numba")
    assert python("import pi_backprop as pb; print(pb.get_backend())", PI_BACKPROP_BACKEND=name) == name


def test_import_loads_no_hardware_library_and_no_numba():
    loaded = python("import sys, pi_backprop; print(sorted(m for m in sys.modules "
                    "if m.split('.')[0] in ('gpiozero', 'picamera2', 'libcamera', 'numba', 'torch')))")
    assert loaded == "[]"


def test_small_data_layers_in_a_model_definition():
    """The new layer kinds and AdamW in the TOML format, its errors in one line each."""
    spec = {"name": "small", "input_shape": [1, 12, 12], "classes": ["a", "b"], "training": {"optimizer": "adamw"},
            "layers": [{"type": "conv2d", "out_channels": 3, "kernel_size": 3}, {"type": "relu"},
                       {"type": "avgpool2d", "pool_size": 2, "stride": 1}, {"type": "dropout", "p": 0.3, "seed": 5},
                       {"type": "globalavgpool2d"}, {"type": "dense", "out_features": 2}]}
    definition = pb.ModelDefinition.from_dict(spec)
    model = definition.build(seed=0)
    kinds = [type(layer) for layer in model.layers]
    assert kinds[2:5] == [pb.AvgPool2D, pb.Dropout, pb.GlobalAvgPool2D]
    assert model.output_shapes[2] == (3, 9, 9) and model.output_shapes[4] == (3,)
    assert model.layers[3].p == 0.3 and model.layers[3].seed == 5
    assert pb.ModelDefinition.from_dict(definition.to_dict()) == definition
    for layer, message in (({"type": "dropout", "p": 1.0}, "Dropout p must be a number in \\[0, 1\\), got 1.0"),
                           ({"type": "dropout"}, "missing key 'p'"),
                           ({"type": "avgpool2d", "pool_size": 0}, "AvgPool2D needs pool_size and stride >= 1")):
        bad = dict(spec, layers=spec["layers"][:3] + [layer] + spec["layers"][4:])
        with pytest.raises(exc.ModelDefinitionError, match=message):
            pb.ModelDefinition.from_dict(bad)
    flat = dict(spec, input_shape=[12], layers=[{"type": "globalavgpool2d"}, {"type": "dense", "out_features": 2}])
    with pytest.raises(exc.ModelDefinitionError, match=r"globalavgpool2d.*expects input of shape \(C, H, W\)"):
        pb.ModelDefinition.from_dict(flat)


def test_dropout_seeds_come_from_the_model_seed_and_position():
    def seeds(seed):
        model = pb.Sequential([pb.Dense(4, 4), pb.Dropout(0.5), pb.Dense(4, 4), pb.Dropout(0.5, seed=3),
                               pb.Dropout(0.5)], seed=seed)
        return [layer.seed for layer in model.dropouts]
    assert seeds(0) == seeds(0) and seeds(0) != seeds(1)
    first, fixed, last = seeds(0)
    assert fixed == 3 and first != last
    without = pb.Sequential([pb.Dense(4, 4), pb.Dense(4, 4)], seed=0)
    with_dropout = pb.Sequential([pb.Dense(4, 4), pb.Dropout(0.5), pb.Dense(4, 4)], seed=0)
    np.testing.assert_array_equal(without.parameter_vector, with_dropout.parameter_vector)  # weights unmoved
