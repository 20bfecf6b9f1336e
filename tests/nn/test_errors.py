"""Bad input gives one clear line naming the layer or key, expected and actual value;
it is raised before any work is done; the command line prints it and exits 2."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop import exc


def raised(call, error_class):
    """Run ``call``; return the error's message after checking its class and form."""
    with pytest.raises(error_class) as info:
        call()
    error = info.value
    assert isinstance(error, ValueError), f"{type(error).__name__} is not a ValueError"
    assert isinstance(error, pb.PiBackpropError)
    message = str(error)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


def assert_mentions(message, fragments):
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


# -- through the API: model input ------------------------------------------------------------

def sensor():
    return pb.load_model("sensor_mlp", seed=0)


def camera():
    return pb.load_model("camera_cnn", seed=0)


def with_value(shape, index, value):
    x = np.zeros(shape, np.float32)
    x[index] = value
    return x


# (id, model, input batch, error class, fragments the message must contain)
BAD_INPUTS = [
    ("dense_features", sensor, np.zeros((4, 31)), exc.ShapeError, ["layer 0", "Dense", "32", "(4, 31)"]),
    ("dense_extra_axis", sensor, np.zeros((4, 32, 1)), exc.ShapeError, ["layer 0", "Dense", "(4, 32, 1)"]),
    ("no_batch_axis", sensor, np.zeros(32), exc.ShapeError, ["batch", "(32,)"]),
    ("empty_batch", sensor, np.zeros((0, 32)), exc.ShapeError, ["N >= 1", "(0, 32)"]),
    ("conv_no_channel", camera, np.zeros((2, 28, 28)), exc.ShapeError,
     ["layer 0", "Conv2D", "(N, 1, 28, 28)", "(2, 28, 28)"]),
    ("conv_width", camera, np.zeros((2, 1, 28, 27)), exc.ShapeError, ["layer 0", "Conv2D", "(2, 1, 28, 27)"]),
    ("nan", sensor, with_value((3, 32), (1, 5), np.nan), exc.InputError, ["NaN"]),
    ("inf", camera, with_value((2, 1, 28, 28), (0, 0, 3, 3), -np.inf), exc.InputError, ["inf"]),
    ("strings", sensor, np.array([["a"] * 32]), exc.InputError, ["numeric"]),
]


@pytest.mark.parametrize("build, x, error_class, fragments", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
@pytest.mark.parametrize("method", ["forward", "predict"])
def test_bad_input_is_named(build, x, error_class, fragments, method):
    assert_mentions(raised(lambda: getattr(build(), method)(x), error_class), fragments)


def snapshot(model, optimizer):
    return (model.parameter_vector.copy(), model.gradient_vector.copy(), optimizer.step_count,
            {k: v.copy() for k, v in optimizer.buffers.items()})


def assert_untouched(before, after):
    np.testing.assert_array_equal(before[0], after[0], err_msg="parameters changed")
    np.testing.assert_array_equal(before[1], after[1], err_msg="gradients changed")
    assert before[2] == after[2], "optimizer stepped"
    for name in before[3]:
        np.testing.assert_array_equal(before[3][name], after[3][name], err_msg=f"optimizer {name} changed")


# (id, input, targets, loss, error class, fragments); the model is sensor_mlp (32 -> 4 classes)
BAD_STEPS = [
    ("input_shape", np.zeros((2, 33)), np.array([0, 1]), pb.SoftmaxCrossEntropy, exc.ShapeError,
     ["layer 0", "Dense", "(2, 33)"]),
    ("nan_input", with_value((2, 32), (0, 0), np.nan), np.array([0, 1]), pb.SoftmaxCrossEntropy,
     exc.InputError, ["NaN"]),
    ("label_too_big", np.ones((3, 32)), np.array([0, 4, 1]), pb.SoftmaxCrossEntropy, exc.InputError,
     ["label 4", "4 classes", "0..3"]),
    ("label_negative", np.ones((2, 32)), np.array([-1, 0]), pb.MSELoss, exc.InputError, ["label -1", "0..3"]),
    ("label_count", np.ones((2, 32)), np.array([0, 1, 2]), pb.SoftmaxCrossEntropy, exc.ShapeError,
     ["3 labels", "batch of 2"]),
    ("float_labels", np.ones((2, 32)), np.array([0.0, 1.0]), pb.SoftmaxCrossEntropy, exc.ShapeError,
     ["(2,)", "int labels"]),
    ("target_width", np.ones((2, 32)), np.zeros((2, 3)), pb.MSELoss, exc.ShapeError, ["(2, 3)", "(2, 4)"]),
    ("nan_targets", np.ones((2, 32)), np.full((2, 4), np.nan), pb.MSELoss, exc.InputError, ["NaN"]),
]


@pytest.mark.parametrize("optimizer_class", [pb.SGD, pb.Adam])
@pytest.mark.parametrize("x, t, loss_class, error_class, fragments", [case[1:] for case in BAD_STEPS],
                         ids=[case[0] for case in BAD_STEPS])
def test_failing_train_step_changes_nothing(backend, x, t, loss_class, error_class, fragments, optimizer_class):
    model = sensor()
    optimizer = optimizer_class(model, lr=0.1, **({"momentum": 0.9} if optimizer_class is pb.SGD else {}))
    loss = loss_class()
    good_x = np.random.default_rng(0).normal(size=(2, 32))
    model.train_step(good_x, np.array([0, 1]), loss, optimizer)  # buffers and grads are non-zero now
    before = snapshot(model, optimizer)
    assert_mentions(raised(lambda: model.train_step(x, t, loss, optimizer), error_class), fragments)
    assert_untouched(before, snapshot(model, optimizer))


# -- through the API: models that do not fit together ----------------------------------------

BAD_ARCHITECTURES = [
    ("dense_sizes", lambda: pb.Sequential([pb.Dense(3, 4), pb.ReLU(), pb.Dense(5, 2)]),
     ["layer 2", "Dense", "(5,)", "(4,)"]),
    ("no_flatten", lambda: pb.Sequential([pb.Conv2D(1, 2, 3), pb.Dense(18, 2)], input_shape=(1, 5, 5)),
     ["layer 1", "Dense", "(2, 3, 3)", "Flatten"]),
    ("kernel_too_big", lambda: pb.Sequential([pb.Conv2D(1, 2, (3, 7))], input_shape=(1, 5, 5)),
     ["layer 0", "Conv2D", "3x7", "5x5"]),
    ("conv_channels", lambda: pb.Sequential([pb.ReLU(), pb.Conv2D(3, 2, 3)], input_shape=(1, 5, 5)),
     ["layer 1", "Conv2D", "(3, H, W)", "(1, 5, 5)"]),
    ("pool_too_big", lambda: pb.Sequential([pb.Conv2D(1, 1, 3), pb.MaxPool2D(4)], input_shape=(1, 5, 5)),
     ["layer 1", "MaxPool2D", "4x4", "3x3"]),
    ("not_a_layer", lambda: pb.Sequential([pb.Dense(3, 4), "relu"]), ["layer 1", "str"]),
    ("zero_units", lambda: pb.Dense(0, 3), ["in_features", "0"]),
    ("bad_kernel", lambda: pb.Conv2D(1, 2, (3,)), ["kernel_size", "(3,)"]),
    ("negative_padding", lambda: pb.Conv2D(1, 2, 3, padding=-1), ["padding", "-1"]),
    ("float_pool", lambda: pb.MaxPool2D(2.0), ["pool_size", "2.0"]),
    ("bool_kernel", lambda: pb.Conv2D(1, 2, True), ["kernel_size", "True"]),
    ("float_stride", lambda: pb.Conv2D(1, 2, 3, stride=(1.5, 1)), ["stride", "1.5"]),
    ("bad_dtype", lambda: pb.Sequential([pb.Dense(2, 2)], dtype=np.int32), ["float32", "int32"]),
]


@pytest.mark.parametrize("build, fragments", [case[1:] for case in BAD_ARCHITECTURES],
                         ids=[case[0] for case in BAD_ARCHITECTURES])
def test_layers_that_do_not_fit_are_named(build, fragments):
    assert_mentions(raised(build, exc.ModelDefinitionError), fragments)


def test_first_batch_fixes_an_open_input_shape_only_when_it_fits():
    """Without input_shape the first batch decides it; a batch that does not fit is refused
    naming the layer, and a later batch that fits is still accepted."""
    model = pb.Sequential([pb.Conv2D(2, 2, 3), pb.Flatten(), pb.Dense(8, 2)], seed=0)
    assert_mentions(raised(lambda: model.forward(np.zeros((1, 1, 4, 4))), ValueError), ["layer 0", "Conv2D"])
    assert model.input_shape is None
    assert model.forward(np.zeros((1, 2, 4, 4))).shape == (1, 2)
    assert_mentions(raised(lambda: model.forward(np.zeros((1, 2, 5, 4))), exc.ShapeError),
                    ["layer 0", "(N, 2, 4, 4)", "(1, 2, 5, 4)"])


BAD_OPTIMIZERS = [
    ("negative_lr", lambda m: pb.SGD(m, lr=-0.1), ["lr", "-0.1"]),
    ("nan_lr", lambda m: pb.Adam(m, lr=float("nan")), ["lr", "nan"]),
    ("negative_momentum", lambda m: pb.SGD(m, lr=0.1, momentum=-1), ["momentum", "-1"]),
    ("beta_one", lambda m: pb.Adam(m, betas=(0.9, 1.0)), ["betas", "1.0"]),
]


@pytest.mark.parametrize("build, fragments", [case[1:] for case in BAD_OPTIMIZERS],
                         ids=[case[0] for case in BAD_OPTIMIZERS])
def test_bad_optimizer_settings_are_named(build, fragments):
    assert_mentions(raised(lambda: build(sensor()), exc.ConfigError), fragments)


def test_unknown_backend_is_named():
    assert_mentions(raised(lambda: pb.set_backend("bogus"), exc.BackendError), ["'bogus'", "numba", "numpy"])


# -- model definitions: through load_model and through `pi-backprop gradcheck` ---------------

HEAD = 'name = "probe"\ninput_shape = [4]\nclasses = ["a", "b"]\n'
DENSE_2 = '[[layers]]\ntype = "dense"\nout_features = 2\n'

# (id, file text or None for a missing file, fragments the message must contain)
BAD_DEFINITIONS = [
    ("unknown_layer_type", HEAD + '[[layers]]\ntype = "dens"\nout_features = 2\n',
     ["layer 0", "'dens'", "dense", "conv2d"]),
    ("unknown_layer_key", HEAD + DENSE_2 + 'activation = "relu"\n', ["layer 0", "'activation'", "out_features"]),
    ("unknown_top_key", HEAD + 'optimiser = "sgd"\n' + DENSE_2, ["'optimiser'", "input_shape"]),
    ("unknown_training_key", HEAD + DENSE_2 + '[training]\nlearning_rate = 0.1\n', ["learning_rate", "lr"]),
    ("missing_layer_key", HEAD + '[[layers]]\ntype = "dense"\n', ["layer 0", "'out_features'"]),
    ("missing_classes", 'name = "probe"\ninput_shape = [4]\n' + DENSE_2, ["'classes'"]),
    ("unknown_loss", HEAD + 'loss = "hinge"\n' + DENSE_2, ["'hinge'", "mse"]),
    ("loss_not_a_string", HEAD + 'loss = ["mse"]\n' + DENSE_2, ["['mse']", "mse"]),
    ("type_not_a_string", HEAD + '[[layers]]\ntype = ["dense"]\nout_features = 2\n', ["layer 0", "['dense']"]),
    ("float_kernel", 'name = "probe"\ninput_shape = [1, 6, 6]\nclasses = ["a", "b"]\n'
     '[[layers]]\ntype = "conv2d"\nout_channels = 2\nkernel_size = 3.0\n', ["layer 0", "kernel_size", "3.0"]),
    ("bad_toml", HEAD + 'loss = mse\n' + DENSE_2, ["not valid TOML", "line 4"]),
    ("layers_do_not_fit", 'name = "probe"\ninput_shape = [1, 6, 6]\nclasses = ["a", "b"]\n'
     '[[layers]]\ntype = "conv2d"\nout_channels = 2\nkernel_size = 3\n' + DENSE_2,
     ["layer 1", "dense", "(2, 4, 4)", "Flatten"]),
    ("explicit_sizes_clash", HEAD + '[[layers]]\ntype = "dense"\nin_features = 5\nout_features = 2\n',
     ["layer 0", "dense", "(5,)", "(4,)"]),
    ("classes_vs_outputs", HEAD.replace('"b"]', '"b", "c"]') + DENSE_2, ["(2,)", "3 classes"]),
    ("missing_file", None, ["does not exist"]),
]


def write_definition(tmp_path, text):
    path = tmp_path / "probe.toml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, fragments", [case[1:] for case in BAD_DEFINITIONS],
                         ids=[case[0] for case in BAD_DEFINITIONS])
def test_bad_definition_is_named(tmp_path, text, fragments):
    path = write_definition(tmp_path, text)
    assert_mentions(raised(lambda: pb.load_model(path), exc.ModelDefinitionError), fragments)


def test_unknown_model_name_lists_the_shipped_ones():
    assert_mentions(raised(lambda: pb.load_model("no_such_model"), exc.ModelDefinitionError),
                    ["'no_such_model'", "camera_cnn", "sensor_mlp", "seed_mlp"])


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pi_backprop", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("text, fragments", [case[1:] for case in BAD_DEFINITIONS],
                         ids=[case[0] for case in BAD_DEFINITIONS])
def test_cli_prints_one_line_and_exits_2(tmp_path, text, fragments):
    result = run_cli("gradcheck", write_definition(tmp_path, text))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("pi-backprop gradcheck: error: ")
    assert_mentions(lines[0], fragments)


@pytest.mark.parametrize("args, fragments", [
    (["gradcheck", "no_such_model"], ["'no_such_model'", "camera_cnn"]),
    (["gradcheck", "sensor_mlp", "--batch-size", "x"], ["--batch-size", "'x'"]),
    (["--backend", "bogus", "gradcheck", "sensor_mlp"], ["--backend", "'bogus'"]),
    (["gradcheck"], ["model"]),
    (["gradcheck", "sensor_mlp", "--seed", "-1"], ["--seed", "-1"]),
    (["gradcheck", "sensor_mlp", "--batch-size", "0"], ["--batch-size", "0"]),
], ids=["unknown_model", "bad_int", "bad_backend", "missing_argument", "negative_seed", "empty_batch"])
def test_cli_usage_errors_exit_2(args, fragments):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert_mentions(lines[0], fragments)


def test_cli_unknown_backend_from_environment_exits_2(tmp_path):
    env_result = subprocess.run([sys.executable, "-m", "pi_backprop", "gradcheck", "sensor_mlp"],
                                capture_output=True, text=True, timeout=120,
                                env={**__import__("os").environ, "PI_BACKPROP_BACKEND": "bogus"})
    assert env_result.returncode == 2, env_result.stderr
    assert env_result.stderr.count("\n") == 1 and "Traceback" not in env_result.stderr
    assert_mentions(env_result.stderr, ["PI_BACKPROP_BACKEND", "'bogus'"])


@pytest.mark.parametrize("line, fragment", [
    ("lr = -1", "training.lr must be > 0"),
    ("batch_size = 0", "training.batch_size must be > 0"),
    ('optimizer = "rmsprop"', "training.optimizer 'rmsprop' is unknown"),
    ("momentum = -0.5", "training.momentum must be >= 0"),
])
def test_training_table_values_are_checked(tmp_path, line, fragment):
    path = tmp_path / "m.toml"
    path.write_text('name = "m"\ninput_shape = [2]\nclasses = ["a", "b"]\n'
                    '[[layers]]\ntype = "dense"\nout_features = 2\n[training]\n' + line + "\n")
    with pytest.raises(exc.ModelDefinitionError, match=re.escape(fragment)):
        pb.load_definition(path)


def test_backward_without_forward_or_with_a_wrong_shape_is_one_line(backend):
    model = pb.Sequential([pb.Dense(3, 2)], seed=0)
    with pytest.raises(exc.InputError, match="needs a forward"):
        model.backward(np.zeros((1, 2), np.float32))
    model.forward(np.zeros((4, 3), np.float32))
    with pytest.raises(exc.ShapeError, match=r"expects dL/doutput of shape \(4, 2\).*got \(4, 3\)"):
        model.backward(np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_output_into_a_closed_pipe_stops_quietly(unbuffered):
    """`pi-backprop ... | head`: no BrokenPipeError traceback when the reader leaves early,
    whether each line is written at once (PYTHONUNBUFFERED) or buffered until the end."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    process = subprocess.Popen([sys.executable, "-m", "pi_backprop", "gradcheck", "sensor_mlp"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    process.stdout.close()                      # the reader is gone before the first line
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141     # 128 + SIGPIPE, as a shell pipeline expects
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
