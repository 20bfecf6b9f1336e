"""The numba backend against the numpy reference: every kernel over a table of shapes, the
fused training step against the layer-by-layer path, and whole float32 training runs.

Tolerances: the two backends add the same products in a different order (hand loops or
BLAS blocking against numpy's pairwise sums). A sum of K terms then differs by a few ulp of
its largest *term*, not of its result: an element near zero after cancellation has a large
relative error. So the absolute tolerance is scaled by the tensor's largest value:
float32 ulp 1.2e-7 x ~10 summed terms -> 2e-6 x scale; float64 ulp 2.2e-16 -> 1e-13 x scale.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import pi_backprop as pb  # noqa: E402
from pi_backprop.nn import kernels_numpy as ref  # noqa: E402
from pi_backprop.nn.engine import layer_kernels as nb  # noqa: E402
from pi_backprop.nn.engine import opcodes  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def close(actual, expected, dtype, factor=1.0):
    """allclose with rtol = TOL and atol = TOL x the largest |expected| (see the docstring)."""
    assert actual.dtype == expected.dtype == np.dtype(dtype)
    assert actual.shape == expected.shape
    tol = TOL[np.dtype(dtype).type] * factor
    scale = max(float(np.max(np.abs(expected))), 1.0) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- dense and activations ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, I, O", [(1, 1, 1), (1, 32, 64), (3, 5, 7), (15, 9, 4), (16, 33, 10), (40, 7, 3)])
def test_dense(rng, dtype, N, I, O):
    x, W, b = (rng.normal(size=s).astype(dtype) for s in [(N, I), (I, O), (O,)])
    delta = rng.normal(size=(N, O)).astype(dtype)
    close(nb.dense_forward(x, W, b), ref.dense_forward(x, W, b), dtype)
    grads = {}
    for name, module in (("nb", nb), ("ref", ref)):
        dW, db = np.full((I, O), np.nan, dtype), np.full(O, np.nan, dtype)
        dx = module.dense_backward(delta, x, W, dW, db)
        grads[name] = (dx, dW, db)
    for actual, expected in zip(grads["nb"], grads["ref"]):
        close(actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 3, 4, 5)])
def test_activations(rng, dtype, name, shape):
    z = (3 * rng.normal(size=shape)).astype(dtype)
    z.flat[0] = 0  # relu's kink
    if z.size > 1:
        z.flat[1] = -200  # sigmoid's exp overflow
    delta = rng.normal(size=shape).astype(dtype)
    y = getattr(nb, f"{name}_forward")(z)
    close(y, getattr(ref, f"{name}_forward")(z), dtype)
    close(getattr(nb, f"{name}_backward")(delta, y), getattr(ref, f"{name}_backward")(delta, y), dtype)


# -- convolution and pooling --------------------------------------------------------------

CONV_CASES = [
    # (N, C, H, W), F, (kh, kw), (sh, sw), (ph, pw)
    ((1, 1, 5, 5), 2, (3, 3), (1, 1), (0, 0)),
    ((2, 3, 6, 5), 4, (3, 2), (1, 1), (1, 1)),
    ((2, 2, 7, 7), 3, (3, 3), (2, 2), (0, 0)),
    ((1, 2, 6, 8), 2, (2, 3), (2, 1), (2, 2)),
    ((3, 1, 4, 4), 1, (1, 1), (1, 1), (0, 0)),
    ((2, 2, 5, 6), 3, (3, 3), (2, 2), (1, 2)),
    ((1, 1, 28, 28), 8, (3, 3), (1, 1), (1, 1)),
    ((17, 8, 14, 14), 16, (3, 3), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, F, kernel, stride, padding", CONV_CASES)
def test_conv2d(rng, dtype, shape, F, kernel, stride, padding):
    x = rng.normal(size=shape).astype(dtype)
    W = rng.normal(size=(F, shape[1]) + kernel).astype(dtype)
    b = rng.normal(size=F).astype(dtype)
    y, cache = nb.conv2d_forward(x, W, b, stride, padding)
    y_ref, cache_ref = ref.conv2d_forward(x, W, b, stride, padding)
    close(y, y_ref, dtype)
    delta = rng.normal(size=y.shape).astype(dtype)
    results = []
    for module, c in ((nb, cache), (ref, cache_ref)):
        dW, db = np.full(W.shape, np.nan, dtype), np.full(F, np.nan, dtype)
        results.append((module.conv2d_backward(delta, c, W, dW, db, stride, padding), dW, db))
    for actual, expected in zip(*results):
        close(actual, expected, dtype)


POOL_CASES = [
    # (N, C, H, W), pool, stride
    ((2, 2, 4, 4), (2, 2), (2, 2)),
    ((1, 3, 5, 7), (2, 3), (2, 3)),
    ((2, 1, 6, 6), (3, 3), (2, 2)),   # overlapping windows
    ((1, 2, 5, 5), (2, 2), (1, 1)),   # overlapping, stride 1
    ((3, 4, 28, 28), (2, 2), (2, 2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape, pool, stride", POOL_CASES)
def test_maxpool(rng, dtype, ties, shape, pool, stride):
    # With ties, values come from {0, 1, 2}: most windows hold several equal maxima, and the
    # first in row-major window order must win in both backends.
    x = (rng.integers(0, 3, size=shape) if ties else rng.normal(size=shape)).astype(dtype)
    y, argmax = nb.maxpool_forward(x, pool, stride)
    y_ref, argmax_ref = ref.maxpool_forward(x, pool, stride)
    close(y, y_ref, dtype)
    assert argmax.dtype == argmax_ref.dtype
    np.testing.assert_array_equal(argmax, argmax_ref)
    delta = rng.normal(size=y.shape).astype(dtype)
    close(nb.maxpool_backward(delta, argmax, x.shape, pool, stride),
          ref.maxpool_backward(delta, argmax_ref, x.shape, pool, stride), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, pool, stride", POOL_CASES + [((2, 3, 7, 9), (3, 2), (2, 3))])
def test_avgpool(rng, dtype, shape, pool, stride):
    x = rng.normal(size=shape).astype(dtype)
    y, y_ref = nb.avgpool_forward(x, pool, stride), ref.avgpool_forward(x, pool, stride)
    assert y.dtype == y_ref.dtype == dtype
    close(y, y_ref, dtype)
    delta = rng.normal(size=y.shape).astype(dtype)
    close(nb.avgpool_backward(delta, x.shape, pool, stride), ref.avgpool_backward(delta, x.shape, pool, stride),
          dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 4, 5), (3, 8, 7, 7)])
def test_global_avgpool(rng, dtype, shape):
    x = rng.normal(size=shape).astype(dtype)
    y, y_ref = nb.global_avgpool_forward(x), ref.global_avgpool_forward(x)
    assert y.shape == y_ref.shape == shape[:2] and y.dtype == y_ref.dtype == dtype
    close(y, y_ref, dtype)
    np.testing.assert_allclose(y_ref, x.astype(np.float64).mean(axis=(2, 3)), atol=1e-6 if dtype == np.float32
                               else 1e-14)
    delta = rng.normal(size=y.shape).astype(dtype)
    dx = nb.global_avgpool_backward(delta, x.shape)
    close(dx, ref.global_avgpool_backward(delta, x.shape), dtype)
    assert dx.shape == shape and dx.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.25, 0.9])
def test_dropout(rng, dtype, p):
    layer = pb.Dropout(p, seed=3)
    x = rng.normal(size=(4, 3, 5)).astype(dtype)
    mask = layer.mask(x.shape, dtype)
    assert mask.dtype == dtype and set(np.unique(mask)) <= {0, dtype(1 / (1 - p))}
    y, y_ref = nb.dropout_forward(x, mask), ref.dropout_forward(x, mask)
    np.testing.assert_array_equal(y, y_ref)           # one product per element: exact
    delta = rng.normal(size=x.shape).astype(dtype)
    np.testing.assert_array_equal(nb.dropout_backward(delta, mask), ref.dropout_backward(delta, mask))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", ["normal", "ties", "nan"])
@pytest.mark.parametrize("shape, pool, stride", POOL_CASES + [((2, 3, 7, 9), (2, 2), (2, 2))])
def test_fused_maxpool_kernels(rng, dtype, values, shape, pool, stride):
    """The fused step's own pooling (a branch-free path for 2x2 windows, the general loop
    otherwise; NaN makes a 2x2 plane take the general loop) against the numpy reference."""
    from pi_backprop.nn.engine.ops import pool as kf
    x = (rng.integers(0, 3, size=shape) if values == "ties" else rng.normal(size=shape)).astype(dtype)
    if values == "nan":
        x.flat[rng.choice(x.size, size=max(1, x.size // 10), replace=False)] = np.nan
    y_ref, argmax_ref = ref.maxpool_forward(x, pool, stride)
    (N, C, H, W), (OH, OW) = shape, y_ref.shape[2:]
    A = np.concatenate([x.reshape(-1), np.full(y_ref.size, -7, dtype)])
    IDX = np.full(y_ref.size, -1, np.int64)
    kf._pool_forward(A, 0, x.size, IDX, 0, N, C, H, W, OH, OW, *pool, *stride)
    np.testing.assert_array_equal(A[x.size:].reshape(y_ref.shape), y_ref)  # NaN == NaN here
    np.testing.assert_array_equal(IDX.reshape(y_ref.shape), argmax_ref)
    delta = rng.normal(size=y_ref.shape).astype(dtype)
    D = np.concatenate([delta.reshape(-1), np.full(x.size, np.nan, dtype)])
    kf._pool_backward(D, 0, delta.size, IDX, 0, N, C, H, W, OH, OW, pool[1], *stride)
    close(D[delta.size:].reshape(shape), ref.maxpool_backward(delta, argmax_ref, shape, pool, stride), dtype)


# -- optimizer updates ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 1e-2), (0.9, 5e-4)])
def test_sgd_update(rng, dtype, momentum, weight_decay):
    p0, g = (rng.normal(size=101).astype(dtype) for _ in range(2))
    states = []
    for module in (nb, ref):
        p, v = p0.copy(), np.zeros_like(p0)
        for _ in range(3):
            module.sgd_update(p, g, v, 0.1, momentum, weight_decay)
        states.append((p, v))
    for actual, expected in zip(*states):
        close(actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update(rng, dtype):
    p0 = rng.normal(size=101).astype(dtype)
    states = []
    for module in (nb, ref):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step in range(1, 5):
            g = np.sin(p * step)  # a gradient that depends on the parameters
            module.adam_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, step)
        states.append((p, m, v))
    for actual, expected in zip(*states):
        close(actual, expected, dtype)


def test_division_by_zero_follows_numpy(rng):
    """Adam with eps = 0 and a zero gradient divides 0 by 0: NaN in both backends (numba's
    default error model would raise ZeroDivisionError, and check every division)."""
    results = []
    for module in (nb, ref):
        p, g = np.ones(3, np.float32), np.array([0.0, 1.0, 0.0], np.float32)
        with np.errstate(invalid="ignore"):
            module.adam_update(p, g, np.zeros_like(p), np.zeros_like(p), 1e-2, 0.9, 0.999, 0.0, 1)
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])
    assert np.isnan(results[0][0]) and np.isfinite(results[0][1])


def test_every_supported_layer_has_its_own_op_code():
    """The program's tables map each supported layer, loss and optimizer to a distinct code of
    ``opcodes``, the one definition the kernels read too."""
    from pi_backprop.nn.engine import opcodes as op
    from pi_backprop.nn.engine import program as fz
    layer_kinds = {pb.Dense: op.DENSE, pb.Conv2D: op.CONV, pb.MaxPool2D: op.POOL, pb.Flatten: op.FLATTEN,
                   pb.ReLU: op.RELU, pb.Sigmoid: op.SIGMOID, pb.Tanh: op.TANH, pb.AvgPool2D: op.AVGPOOL,
                   pb.Dropout: op.DROPOUT}
    # the global average is an average pool whose window is the whole plane
    assert fz._KINDS == {**layer_kinds, pb.GlobalAvgPool2D: op.AVGPOOL}
    assert len(set(layer_kinds.values())) == len(layer_kinds)
    assert fz._LOSSES == {pb.SoftmaxCrossEntropy: op.SOFTMAX_CE, pb.MSELoss: op.MSE}
    # AdamW is Adam's update with the decay factor in S[S_DECAY]
    assert fz._OPTIMIZERS == {pb.SGD: op.SGD_UPDATE, pb.Adam: op.ADAM_UPDATE, pb.AdamW: op.ADAM_UPDATE}


LAYOUT_MODELS = {
    "cnn": lambda: pb.load_definition("camera_cnn").build(seed=0),
    "mlp": lambda: pb.load_definition("seed_mlp").build(seed=0),
    "pool-only": lambda: pb.Sequential([pb.MaxPool2D(2), pb.Flatten(), pb.Dense(8, 3)], seed=0,
                                       input_shape=(2, 4, 4)),
    "strided-float64": lambda: pb.Sequential([pb.Conv2D(1, 2, 3, stride=2, padding=1), pb.Flatten(),
                                              pb.Dense(8, 3)], seed=0, input_shape=(1, 4, 4),
                                             dtype=np.float64),
}


@pytest.mark.parametrize("kind", LAYOUT_MODELS)
def test_fused_workspace_layout_agrees_with_the_kernel(restore_backend, kind):
    """engine/program.py lays out a batch's workspace (WF, WI); engine.kernels.views cuts it apart
    again, compiled and (in op_by_op) in Python. They must agree on every region, and the
    regions must neither overlap nor run past WF, or a kernel reads the wrong memory."""
    import numba

    from pi_backprop.nn.engine import kernels as kf
    from pi_backprop.nn.engine import program as fz
    pb.set_backend("numba")
    program = fz.program_for(LAYOUT_MODELS[kind]())
    compiled_views = numba.njit(lambda WF, WI: kf.views(WF, WI))
    for N in (1, 3, 5, 2, 7):  # more batch sizes than workspaces kept: some are rebuilt
        WF, WI, A, S, _ = program.workspace(N)
        for ops, n, A2, D, X, cols_size, IDX, S2 in (kf.views.py_func(WF, WI), compiled_views(WF, WI)):
            np.testing.assert_array_equal(ops, program.ops)
            assert (n, cols_size) == (N, program.cols_size)
            assert S2.size == opcodes.S_SIZE and S2[opcodes.S_N] == N and S2[opcodes.S_ONE] == 1
            assert A2.size == N * program.act_size and D.size == 2 * N * program.max_size
            assert X.size == N * program.cols_size + program.scratch_size
            assert IDX.size == N * program.arg_size
            address = [r.__array_interface__["data"][0] for r in (S2, A2, D, X)]
            assert address[1] == A.__array_interface__["data"][0] and address[0] == S.__array_interface__["data"][0]
            ends = [a + r.nbytes for a, r in zip(address, (S2, A2, D, X))]
            assert all(end <= start for end, start in zip(ends, address[1:]))  # in order, no overlap
            assert ends[-1] == WF.__array_interface__["data"][0] + WF.nbytes
            assert all(a % opcodes.ALIGN_BYTES == 0 for a in address)


def test_fused_call_checks_sizes_before_touching_anything(restore_backend, rng):
    """The kernel is the last line: inputs of the wrong size give a status, not a write past
    a buffer, and change nothing (engine/program.py checks shapes first, so only a direct call can
    get here)."""
    from pi_backprop.nn.engine import kernels as kf
    from pi_backprop.nn.engine import program as fz
    pb.set_backend("numba")
    model = pb.load_definition("sensor_mlp").build(seed=0)
    program, before = fz.program_for(model), model.parameter_vector.copy()
    WF, WI, A, S, runner = program.workspace(2)
    assert runner is kf.run
    P, G, velocity, none = model.parameter_vector, model.gradient_vector, np.zeros_like(before), program._no_buffer
    x, labels, targets = rng.normal(size=64).astype(np.float32), np.array([0, 1]), np.zeros(8, np.float32)
    calls = {
        opcodes.BAD_INPUT: (x[:63], labels, program._no_targets),
        opcodes.BAD_LABEL: (x, labels[:1], program._no_targets),
        opcodes.BAD_TARGET: (x, program._no_labels, targets[:7]),
    }
    for status, (x_, labels_, targets_) in calls.items():
        for opt_kind in (opcodes.SGD_UPDATE, opcodes.ADAM_UPDATE):
            got = kf.run(x_, labels_, targets_, P, G, WF, WI, opcodes.SOFTMAX_CE, opt_kind, velocity, velocity)
            assert got == status and S[opcodes.S_STATUS] == status
    assert kf.run(x[:62], program._no_labels, program._no_targets, P, G, WF, WI, 0, opcodes.FORWARD_ONLY,
                  none, none) == opcodes.BAD_INPUT
    np.testing.assert_array_equal(model.parameter_vector, before)
    assert not velocity.any()
    # and the right sizes work, for labels, targets and a forward pass
    sgd = opcodes.SGD_UPDATE
    assert kf.run(x, labels, program._no_targets, P, G, WF, WI, opcodes.SOFTMAX_CE, sgd, velocity, none) > 0
    assert kf.run(x, program._no_labels, targets + 0.25, P, G, WF, WI, opcodes.MSE, sgd, velocity, none) > 0
    assert kf.run(x, program._no_labels, program._no_targets, P, G, WF, WI, 0, opcodes.FORWARD_ONLY, none, none) == 0


# -- import hygiene and the warm-up command ------------------------------------------------

def test_import_pi_backprop_does_not_import_numba():
    code = "import sys, pi_backprop; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_warmup_fills_an_empty_numba_cache(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "pi_backprop", "warmup", "--float32-only"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    cached = [p.name for p in tmp_path.rglob("*.nbi")]
    assert any(name.startswith("kernels.run-") for name in cached), cached
    assert any(name.startswith("conv._conv_forward-") for name in cached), cached  # strided: op by op
    assert "train_step" in out.stdout


def test_the_engine_compiles_each_operation_once():
    """One set of compiled operations: every numba function of the package is defined in the
    engine's op modules or its fused entry point; the layer-by-layer functions and the
    op-by-op driver only call them, and no two kernels share a body."""
    import ast
    import importlib
    import inspect
    import pkgutil

    import numba

    import pi_backprop
    compiled = {}
    for info in pkgutil.walk_packages(pi_backprop.__path__, "pi_backprop."):
        if info.name.startswith("pi_backprop.nn.engine"):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if isinstance(value, numba.core.registry.CPUDispatcher):
                    compiled[value.py_func.__qualname__] = value.py_func.__module__
    homes = set(compiled.values())
    assert "run" in compiled and "_dense_forward" in compiled and "_sgd_update" in compiled
    assert all(home == "pi_backprop.nn.engine.kernels" or home.startswith("pi_backprop.nn.engine.ops.")
               for home in homes), homes
    bodies = []
    for home in homes:
        tree = ast.parse(inspect.getsource(importlib.import_module(home)))
        bodies += [ast.dump(ast.Module(body=node.body, type_ignores=[])) for node in tree.body
                   if isinstance(node, ast.FunctionDef)]
    assert len(bodies) == len(set(bodies))


# -- the fused step against the layer path --------------------------------------------------

MODELS = ["sensor_mlp", "camera_cnn", "seed_mlp"]
OPTIMIZERS = {
    "sgd": lambda m: pb.SGD(m, lr=0.05),
    "sgd-momentum-decay": lambda m: pb.SGD(m, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "adam": lambda m: pb.Adam(m, lr=1e-2),
    "adamw": lambda m: pb.AdamW(m, lr=1e-2, weight_decay=0.1),
}


def train(backend, name, make_optimizer, dtype, steps, batch, targets="labels", seed=0):
    """``steps`` training steps of shipped model ``name``; returns (model, optimizer, losses)."""
    pb.set_backend(backend)
    definition = pb.load_definition(name)
    model = definition.build(seed=seed, dtype=dtype)
    optimizer, loss = make_optimizer(model), definition.make_loss()
    rng = np.random.default_rng(seed)
    classes = len(definition.classes)
    losses = []
    for _ in range(steps):
        x = rng.normal(size=(batch,) + definition.input_shape).astype(dtype)
        t = rng.integers(0, classes, batch)
        if targets == "one-hot":
            t = np.eye(classes, dtype=dtype)[t]
        elif targets == "soft":  # real targets whose rows do not sum to 1
            t = rng.uniform(0, 1, size=(batch, classes)).astype(dtype)
        losses.append(model.train_step(x, t, loss, optimizer))
    return model, optimizer, losses


@pytest.fixture
def restore_backend():
    from pi_backprop.nn import backend
    previous = backend.current
    yield
    backend.current = previous


@pytest.mark.parametrize("batch", [1, 3, 6])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", MODELS)
def test_fused_step_matches_layer_path(restore_backend, name, opt, batch):
    """float64, 4 steps at batch 1 (the single-sample loops), 3 and 6 (blocks of four
    samples and leftovers); all on the fused path (see program.BLAS_MIN_MACS)."""
    fused = train("numba", name, OPTIMIZERS[opt], np.float64, 4, batch)
    layers = train("numpy", name, OPTIMIZERS[opt], np.float64, 4, batch)
    assert fused[0]._fused_program is not None
    np.testing.assert_allclose(fused[2], layers[2], rtol=1e-12)
    # Adam's step m/(√v + eps) magnifies, for gradients near eps, the rounding differences
    # of sums taken in another order (one of seed_mlp's 79510 at batch 6): 100 x TOL.
    close(fused[0].parameter_vector, layers[0].parameter_vector, np.float64,
          factor=100 if opt.startswith("adam") else 1)
    close(fused[0].gradient_vector, layers[0].gradient_vector, np.float64)
    for (a_name, a), (b_name, b) in zip(fused[0].named_gradients(), layers[0].named_gradients()):
        close(a, b, np.float64)  # layer.grads are views that the fused step filled
    assert fused[1].step_count == layers[1].step_count == 4
    for key, buffer in layers[1].buffers.items():
        close(fused[1].buffers[key], buffer, np.float64, factor=100)  # Adam's v ~ g²: relative


@pytest.mark.parametrize("name, targets", [("sensor_mlp", "one-hot"), ("seed_mlp", "labels"),
                                           ("sensor_mlp", "soft"), ("camera_cnn", "soft")])
def test_fused_step_target_forms(restore_backend, name, targets):
    fused = train("numba", name, OPTIMIZERS["adam"], np.float64, 3, 2, targets=targets)
    layers = train("numpy", name, OPTIMIZERS["adam"], np.float64, 3, 2, targets=targets)
    np.testing.assert_allclose(fused[2], layers[2], rtol=1e-12)
    close(fused[0].parameter_vector, layers[0].parameter_vector, np.float64)


CONV_NETS = {
    # kernel widths 1, 2, 4 and 5 (three-tap groups and leftovers), 2, 3, 5 and 9 planes
    # (four- and eight-plane groups and leftovers), padding 0 and 2, non-square kernels
    "taps": lambda: [pb.Conv2D(2, 5, (3, 5), padding=2), pb.Tanh(), pb.Conv2D(5, 9, (2, 4)), pb.ReLU(),
                     pb.Conv2D(9, 3, 1), pb.Sigmoid(), pb.MaxPool2D(2), pb.Flatten(), pb.Dense(3 * 5 * 3, 4)],
    # a strided convolution: the whole step runs op by op (engine/op_by_op.py)
    "strided": lambda: [pb.Conv2D(2, 3, 3, stride=(2, 1), padding=1), pb.ReLU(), pb.Conv2D(3, 2, 2),
                        pb.Flatten(), pb.Dense(2 * 4 * 8, 4)],
}


@pytest.mark.parametrize("net", sorted(CONV_NETS))
def test_fused_convolutions_match_layer_path(restore_backend, rng, net):
    """float64, Adam, 3 steps at batch 5, on convolution shapes the shipped models lack."""
    results = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        model = pb.Sequential(CONV_NETS[net](), seed=4, dtype=np.float64, input_shape=(2, 9, 9))
        optimizer, loss, data = pb.Adam(model, lr=1e-2), pb.SoftmaxCrossEntropy(), np.random.default_rng(1)
        losses = [model.train_step(data.normal(size=(5, 2, 9, 9)), data.integers(0, 4, 5), loss, optimizer)
                  for _ in range(3)]
        results[backend] = model, losses
    fused, layers = results["numba"], results["numpy"]
    assert fused[0]._fused_program.has_strided_conv == (net == "strided")
    np.testing.assert_allclose(fused[1], layers[1], rtol=1e-12)
    close(fused[0].parameter_vector, layers[0].parameter_vector, np.float64)
    close(fused[0].gradient_vector, layers[0].gradient_vector, np.float64)


SMALL_DATA_NETS = {
    # average pools (tiling, overlapping), dropout before and after them, a global average
    "small_data": lambda: [pb.Conv2D(2, 4, 3, padding=1), pb.ReLU(), pb.Dropout(0.2), pb.AvgPool2D(2),
                           pb.Conv2D(4, 6, 3, padding=1), pb.ReLU(), pb.AvgPool2D(2, stride=1), pb.Dropout(0.5),
                           pb.GlobalAvgPool2D(), pb.Dense(6, 4)],
    # the same layers where the step runs op by op (a strided convolution)
    "small_data_strided": lambda: [pb.Conv2D(2, 4, 3, stride=2, padding=1), pb.Tanh(), pb.AvgPool2D((2, 3), stride=1),
                                   pb.Flatten(), pb.Dropout(0.3), pb.Dense(4 * 4 * 3, 4)],
}


@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd-momentum-decay"])
@pytest.mark.parametrize("net", sorted(SMALL_DATA_NETS))
def test_fused_small_data_layers_match_layer_path(restore_backend, net, opt):
    """float64, 4 steps at batch 5: average pools, the global average and dropout (the masks
    the layer draws, the same in both paths) in the fused step, against the numpy layers."""
    results = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        model = pb.Sequential(SMALL_DATA_NETS[net](), seed=4, dtype=np.float64, input_shape=(2, 9, 9))
        optimizer, loss, data = OPTIMIZERS[opt](model), pb.SoftmaxCrossEntropy(), np.random.default_rng(1)
        losses = [model.train_step(data.normal(size=(5, 2, 9, 9)), data.integers(0, 4, 5), loss, optimizer)
                  for _ in range(4)]
        x = data.normal(size=(3, 2, 9, 9))
        results[backend] = model, losses, model.predict(x)
    fused, layers = results["numba"], results["numpy"]
    assert fused[0]._fused_program is not None
    assert fused[0]._fused_program.has_strided_conv == net.endswith("strided")
    np.testing.assert_allclose(fused[1], layers[1], rtol=1e-12)
    close(fused[0].parameter_vector, layers[0].parameter_vector, np.float64, factor=100)
    close(fused[0].gradient_vector, layers[0].gradient_vector, np.float64)
    close(fused[2], layers[2], np.float64)


def test_dropout_masks_follow_the_step_and_predict_keeps_every_unit(restore_backend, rng):
    """A step's mask depends on the optimizer's step count alone: two models from one seed
    agree step by step, whichever backend; predict is the model without dropout."""
    x, t = rng.normal(size=(6, 10)), rng.integers(0, 3, 6)

    def run(backend, dropout):
        pb.set_backend(backend)
        layers = [pb.Dense(10, 16), pb.ReLU()] + ([pb.Dropout(0.5)] if dropout else []) + [pb.Dense(16, 3)]
        model = pb.Sequential(layers, seed=9, dtype=np.float64)
        optimizer = pb.SGD(model, lr=0.1)
        before = model.predict(x)
        losses = [model.train_step(x, t, pb.SoftmaxCrossEntropy(), optimizer) for _ in range(3)]
        return before, losses, model

    with_numba, with_numpy, plain = run("numba", True), run("numpy", True), run("numpy", False)
    np.testing.assert_array_equal(with_numpy[0], plain[0])      # predict: no unit dropped, no scaling
    np.testing.assert_allclose(with_numba[0], plain[0], rtol=1e-12)
    np.testing.assert_allclose(with_numba[1], with_numpy[1], rtol=1e-12)
    assert with_numba[1][0] != plain[1][0]                     # training: some units were dropped
    dropout = with_numba[2].layers[2]
    assert dropout.step == 2 and dropout.seed == with_numpy[2].layers[2].seed
    first, again = dropout.mask((6, 16), np.float64), dropout.mask((6, 16), np.float64)
    dropout.step = 3
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, dropout.mask((6, 16), np.float64))
    assert 0.3 < (first == 0).mean() < 0.7


def odd_mlp():
    """Dense sizes that are not multiples of four (the leftover rows of the blocked loops)."""
    return [pb.Dense(5, 7), pb.Tanh(), pb.Dense(7, 3)]


@pytest.mark.parametrize("opt", ["sgd-momentum-decay", "adam"])
@pytest.mark.parametrize("batch", [1, 5, 8, 9])
def test_fused_dense_leftovers_match_layer_path(restore_backend, rng, batch, opt):
    """Batches of one, one block plus one, two blocks, two blocks plus one."""
    results = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        model = pb.Sequential(odd_mlp(), seed=2, dtype=np.float64)
        optimizer, loss, data = OPTIMIZERS[opt](model), pb.SoftmaxCrossEntropy(), np.random.default_rng(3)
        losses = [model.train_step(data.normal(size=(batch, 5)), data.integers(0, 3, batch), loss, optimizer)
                  for _ in range(3)]
        results[backend] = model, losses
    (fused, fused_losses), (layers, layer_losses) = results["numba"], results["numpy"]
    assert fused._fused_program is not None and not fused._fused_program.prefers_blas(batch)
    np.testing.assert_allclose(fused_losses, layer_losses, rtol=1e-12)
    close(fused.parameter_vector, layers.parameter_vector, np.float64, factor=100 if opt == "adam" else 1)
    close(fused.gradient_vector, layers.gradient_vector, np.float64)


def test_fused_step_reads_the_optimizer_buffers_each_step(restore_backend, rng):
    """Replacing a buffer (to reset momentum) takes effect on the next step, as in the layer path."""
    results = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        model = pb.load_model("sensor_mlp", seed=0, dtype=np.float64)
        optimizer, loss, data = pb.SGD(model, lr=0.05, momentum=0.9), pb.SoftmaxCrossEntropy(), np.random.default_rng(5)
        for step in range(4):
            if step == 2:
                optimizer.buffers["velocity"] = np.zeros_like(model.parameter_vector)
            model.train_step(data.normal(size=(3, 32)), data.integers(0, 4, 3), loss, optimizer)
        results[backend] = model, optimizer
    close(results["numba"][0].parameter_vector, results["numpy"][0].parameter_vector, np.float64)
    close(results["numba"][1].buffers["velocity"], results["numpy"][1].buffers["velocity"], np.float64)


def test_fused_step_returns_a_negative_loss(restore_backend):
    """Cross-entropy takes any finite targets, so its loss can be below 0: a loss, not an error."""
    results = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        model = pb.load_model("sensor_mlp", seed=0)
        optimizer = pb.SGD(model, lr=0.1)
        x, t = np.ones((2, 32), np.float32), np.array([[-1.0, 0, 0, 0]] * 2, np.float32)
        results[backend] = model.train_step(x, t, pb.SoftmaxCrossEntropy(), optimizer), optimizer.step_count
    assert results["numba"][0] < 0 and results["numba"][1] == 1
    assert results["numba"][0] == pytest.approx(results["numpy"][0], rel=1e-5)


def test_fused_call_refuses_a_strided_convolution(restore_backend, rng):
    """Only op_by_op runs strided convolutions (their buffers are laid out for im2col): the
    fused call returns BAD_PROGRAM and changes nothing if handed one."""
    from pi_backprop.nn.engine import kernels as kf
    from pi_backprop.nn.engine import program as fz
    pb.set_backend("numba")
    model = pb.Sequential([pb.Conv2D(1, 2, 3, stride=2, padding=1), pb.Flatten(), pb.Dense(8, 3)],
                          seed=0, input_shape=(1, 4, 4))
    program, before = fz.program_for(model), model.parameter_vector.copy()
    WF, WI, A, S, runner = program.workspace(2)
    assert runner is not kf.run
    velocity = np.zeros_like(before)
    status = kf.run(rng.normal(size=32).astype(np.float32), np.array([0, 1]), program._no_targets,
                    model.parameter_vector, model.gradient_vector, WF, WI, opcodes.SOFTMAX_CE, opcodes.SGD_UPDATE,
                    velocity, program._no_buffer)
    assert status == opcodes.BAD_PROGRAM and S[opcodes.S_STATUS] == opcodes.BAD_PROGRAM
    np.testing.assert_array_equal(model.parameter_vector, before)


@pytest.mark.parametrize("name", MODELS)
def test_fused_predict_matches_layer_path(restore_backend, rng, name):
    definition = pb.load_definition(name)
    x = rng.normal(size=(1,) + definition.input_shape).astype(np.float32)
    outputs = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        outputs[backend] = definition.build(seed=1).predict(x)
    close(outputs["numba"], outputs["numpy"], np.float32)


@pytest.mark.parametrize("opt", ["sgd", "sgd-momentum-decay"])
@pytest.mark.parametrize("name, batch", [("seed_mlp", 20), ("sensor_mlp", 360)])
def test_op_by_op_matches_layer_path(restore_backend, name, batch, opt):
    """float64; batches big enough for the op-by-op BLAS path (engine/op_by_op.py). Not Adam: its
    m/√v turns a gradient that is rounding noise (numba's exp and numpy's differ by an ulp)
    into a full lr-sized step of either sign (see the float32 test below); the Adam update
    itself is compared in test_adam_update and test_fused_step_matches_layer_path."""
    fused = train("numba", name, OPTIMIZERS[opt], np.float64, 3, batch)
    layers = train("numpy", name, OPTIMIZERS[opt], np.float64, 3, batch)
    assert fused[0]._fused_program.prefers_blas(batch)
    np.testing.assert_allclose(fused[2], layers[2], rtol=1e-12)
    close(fused[0].parameter_vector, layers[0].parameter_vector, np.float64)
    for (a_name, a), (b_name, b) in zip(fused[0].named_gradients(), layers[0].named_gradients()):
        close(a, b, np.float64)
    for key, buffer in layers[1].buffers.items():
        close(fused[1].buffers[key], buffer, np.float64, factor=100)


@pytest.mark.parametrize("name, batch", [("sensor_mlp", 360), ("seed_mlp", 20)])
def test_blas_predict_matches_layer_path(restore_backend, rng, name, batch):
    definition = pb.load_definition(name)
    x = rng.normal(size=(batch,) + definition.input_shape).astype(np.float32)
    outputs = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        model = definition.build(seed=1)
        outputs[backend] = model.predict(x)
        if backend == "numba":
            assert model._fused_program.prefers_blas(batch)
    close(outputs["numba"], outputs["numpy"], np.float32)


BAD_STEPS = [
    # (what, x change, t change, error class, words in the message)
    ("nan input", lambda x: np.where(x == x.flat[0], np.nan, x), None, pb.PiBackpropError, "NaN"),
    ("label out of range", None, lambda t: np.array([0, 4, 1]), ValueError, "label 4 is out of range"),
    ("negative label", None, lambda t: np.array([0, -1, 1]), ValueError, "label -1"),
    ("too few labels", None, lambda t: t[:2], ValueError, "2 labels for a batch of 3"),
    ("wrong input shape", lambda x: x[:, :31], None, ValueError, "expects input of shape (N, 32)"),
    ("inf target", None, lambda t: np.where(np.eye(4)[t] > 0, np.inf, 0.0), ValueError, "NaN or inf"),
]


@pytest.mark.parametrize("what, change_x, change_t, error, words", BAD_STEPS, ids=[c[0] for c in BAD_STEPS])
def test_fused_step_rejects_bad_input_like_the_layer_path(restore_backend, rng, what, change_x, change_t,
                                                          error, words):
    x = rng.normal(size=(3, 32)).astype(np.float32)
    t = np.array([0, 1, 2])
    x = change_x(x) if change_x else x
    t = change_t(t) if change_t else t
    messages = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        model = pb.load_model("sensor_mlp", seed=0)
        optimizer = pb.SGD(model, lr=0.1)
        before = model.parameter_vector.copy()
        with pytest.raises(error) as caught:
            model.train_step(x, t, pb.SoftmaxCrossEntropy(), optimizer)
        np.testing.assert_array_equal(model.parameter_vector, before)  # nothing was done
        assert optimizer.step_count == 0
        messages[backend] = str(caught.value)
    assert words in messages["numba"]
    assert messages["numba"] == messages["numpy"]


# -- whole float32 training runs --------------------------------------------------------------

@pytest.mark.parametrize("name, batch", [("sensor_mlp", 8), ("sensor_mlp", 64), ("camera_cnn", 4),
                                         ("camera_cnn", 16), ("seed_mlp", 4), ("seed_mlp", 32)])
def test_backends_agree_on_float32_training(restore_backend, name, batch):
    """50 SGD-with-momentum steps in float32. Each step's rounding differs by ~1 ulp between
    backends and these learning rates do not amplify it much over 50 steps: parameters of
    O(0.1) agree to <= 5e-7 absolute (measured); the tolerance allows 20x that. (Not Adam: its update
    m/√v turns a gradient that is rounding noise in both backends into a full lr-sized step
    of either sign, so single parameters legitimately part by ~lr.)"""
    runs = [train(backend, name, OPTIMIZERS["sgd-momentum-decay"], np.float32, 50, batch)
            for backend in ("numba", "numpy")]
    (model_a, _, losses_a), (model_b, _, losses_b) = runs
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model_a.parameter_vector, model_b.parameter_vector, rtol=1e-4, atol=1e-5)
    assert losses_a[-1] < losses_a[0] * 1.5  # it trained, not diverged


def test_dropout_on_the_op_by_op_blas_path_matches_the_layer_path(restore_backend):
    """A dense network at a batch where BLAS pays (``op_by_op``): the masks are written into
    the workspace before the driven step as before the fused one."""
    results = {}
    for backend in ("numba", "numpy"):
        pb.set_backend(backend)
        model = pb.Sequential([pb.Dense(64, 256), pb.ReLU(), pb.Dropout(0.4), pb.Dense(256, 128), pb.ReLU(),
                               pb.Dropout(0.2), pb.Dense(128, 4)], seed=1, dtype=np.float64)
        optimizer, data = pb.AdamW(model, lr=1e-2), np.random.default_rng(0)
        losses = [model.train_step(data.normal(size=(512, 64)), data.integers(0, 4, 512), pb.SoftmaxCrossEntropy(),
                                   optimizer) for _ in range(3)]
        results[backend] = model, losses
    fused, layers = results["numba"], results["numpy"]
    assert fused[0]._fused_program.prefers_blas(512)
    np.testing.assert_allclose(fused[1], layers[1], rtol=1e-12)
    close(fused[0].parameter_vector, layers[0].parameter_vector, np.float64, factor=100)
