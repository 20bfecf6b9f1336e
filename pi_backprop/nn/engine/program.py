"""The fused training step of the numba backend: a ``Sequential`` compiled to an op-code
program that one compiled call runs end to end (forward, loss, backward, update).

``Sequential.train_step`` and ``Sequential.predict`` use it when the backend is numba and
every layer, the loss and the optimizer are of the kinds below; otherwise they run layer
by layer. Results equal the layer path's to rounding (tests/nn/test_backend_parity.py).

Validation stays at the boundary and raises the layer path's errors: shapes and dtypes are
checked here before the call; NaN/inf and label ranges are checked by the kernel before it
touches anything, and on a failure the layer path's own validators produce the message.

This module imports no numba; ``engine.kernels`` is imported on first use.
"""

import importlib

import numpy as np

from .. import layers as L
from ..losses import MSELoss, SoftmaxCrossEntropy, check_targets
from ..optim import SGD, Adam, AdamW
from . import opcodes as op

_KINDS = {L.Dense: op.DENSE, L.Conv2D: op.CONV, L.MaxPool2D: op.POOL, L.Flatten: op.FLATTEN,
          L.ReLU: op.RELU, L.Sigmoid: op.SIGMOID, L.Tanh: op.TANH, L.AvgPool2D: op.AVGPOOL,
          L.GlobalAvgPool2D: op.AVGPOOL, L.Dropout: op.DROPOUT}
_LOSSES = {SoftmaxCrossEntropy: op.SOFTMAX_CE, MSELoss: op.MSE}
_OPTIMIZERS = {SGD: op.SGD_UPDATE, Adam: op.ADAM_UPDATE, AdamW: op.ADAM_UPDATE}
_INT64 = np.dtype(np.int64)  # comparing with a dtype is faster than with a type
_WORKSPACES_KEPT = 3  # batch sizes with a live workspace: training, last partial batch, predict
# The one rule for BLAS: a dense product of at least this many multiply-adds runs faster
# through numpy's matmul (BLAS) than through the engine's hand loops, whose lower overhead
# wins below it. For a fused step that is the whole network's (batch x Σ in·out; then the
# step runs op by op, ``op_by_op``), for a layer-by-layer call one layer's (N·I·O).
# Convolutions always run in the engine: its stride-1 convolution beat im2col + BLAS at
# every batch size measured. Measured on x86-64 (AVX-512), single thread: BENCHMARKS.md.
BLAS_MIN_MACS = 1_500_000


def blas_pays(multiply_adds: int) -> bool:
    """True when dense products of ``multiply_adds`` in all run faster through BLAS."""
    return multiply_adds >= BLAS_MIN_MACS


_modules = {}
# the optimizer's hyper-parameter slots in S, as plain globals (read on every step)
_SGD_SLOTS = slice(op.S_HYPER, op.S_HYPER + 3)
_ADAM_SLOTS = slice(op.S_HYPER, op.S_HYPER + 8)


def _engine_module(name):
    """``kernels`` or ``op_by_op``, imported on first use (they import numba), then kept."""
    module = _modules.get(name)
    if module is None:
        module = _modules[name] = importlib.import_module(f"{__package__}.{name}")
    return module


class Program:
    """A model's layers as op-code rows, plus per-batch-size workspaces.

    ops : int64 (layers, 21), columns as ``opcodes`` names them; sizes per sample.
    """

    def __init__(self, model):
        self.layers = list(model.layers)
        self.input_shape = model.input_shape
        self.input_size = int(np.prod(model.input_shape))
        self.dtype = model.dtype
        self.ops = np.zeros((len(model.layers), op.NCOLS), np.int64)
        self.classes = int(model.output_shapes[-1][0])
        offsets = _param_offsets(model)
        act_offset, arg_offset, cols_offset, scratch = 0, 0, 0, 0
        shape, size = model.input_shape, self.input_size
        max_size = size
        self.dropouts = []  # (layer, per-sample input shape, its size, mask offset in A)
        for index, (layer, out_shape) in enumerate(zip(model.layers, model.output_shapes)):
            out_size = int(np.prod(out_shape))
            row = self.ops[index]
            row[op.KIND] = _KINDS[type(layer)]
            row[op.IN], row[op.IN_SIZE], row[op.OUT_SIZE] = act_offset, size, out_size
            if isinstance(layer, L.Flatten):
                row[op.OUT] = act_offset  # same memory, another shape
            else:
                act_offset += size
                if isinstance(layer, L.Dropout):  # its mask, then its output
                    row[op.MASK] = act_offset
                    self.dropouts.append((layer, shape, size, act_offset))
                    act_offset += size
                row[op.OUT] = act_offset
            if isinstance(layer, L.Dense):
                row[op.WOFF], row[op.BOFF] = offsets[id(layer)]
                row[op.C], row[op.F] = layer.in_features, layer.out_features
                if index > 0:  # room for Wᵀ, for dx (ops.dense._dense_backward)
                    scratch = max(scratch, layer.in_features * layer.out_features)
            elif isinstance(layer, (L.Conv2D, L.MaxPool2D)):
                row[op.C], row[op.H], row[op.W] = shape
                row[op.OH], row[op.OW] = out_shape[1], out_shape[2]
                if isinstance(layer, L.Conv2D):
                    row[op.WOFF], row[op.BOFF] = offsets[id(layer)]
                    row[op.F] = layer.out_channels
                    row[op.KH:op.KW + 1] = layer.kernel_size
                    row[op.SH:op.SW + 1] = layer.stride
                    row[op.PH:op.PW + 1] = layer.padding
                    row[op.COLS] = cols_offset
                    region, need = conv_buffer_sizes(shape, out_shape, layer.kernel_size, layer.stride,
                                                      layer.padding)
                    cols_offset += region
                    scratch = max(scratch, need)
                else:
                    row[op.F] = shape[0]
                    row[op.KH:op.KW + 1] = layer.pool_size
                    row[op.SH:op.SW + 1] = layer.stride
                    row[op.ARG] = arg_offset
                    arg_offset += out_size
            elif isinstance(layer, L.AvgPool2D):
                row[op.C], row[op.H], row[op.W] = shape
                row[op.F] = shape[0]
                row[op.OH], row[op.OW] = out_shape[1], out_shape[2]
                row[op.KH:op.KW + 1] = layer.pool_size
                row[op.SH:op.SW + 1] = layer.stride
            elif isinstance(layer, L.GlobalAvgPool2D):  # one window, the plane's size
                row[op.C], row[op.H], row[op.W] = shape
                row[op.F] = shape[0]
                row[op.KH], row[op.KW] = shape[1], shape[2]
                row[op.OH] = row[op.OW] = row[op.SH] = row[op.SW] = 1
            shape, size = out_shape, out_size
            max_size = max(max_size, size)
        self.act_size = act_offset + size
        self.arg_size = arg_offset
        self.cols_size = cols_offset      # per sample
        self.scratch_size = scratch       # per batch
        self.max_size = max_size
        self.output_offset = int(self.ops[-1, op.OUT])
        convs = self.ops[:, op.KIND] == op.CONV
        self.has_conv = bool(convs.any())
        strides = self.ops[convs, op.SH:op.SW + 1]
        self.has_strided_conv = bool((strides != 1).any())  # not in the fused call: op_by_op
        self.dense_macs = int(sum(row[op.C] * row[op.F] for row in self.ops if row[op.KIND] == op.DENSE))
        self._workspaces = {}
        self._loss = self._optimizer = None  # what train_step was last called with (_bind)
        self._sgd_hyper = {}  # N -> SGD hyper-parameters last written into that S
        self._no_labels = np.zeros(0, np.int64)
        self._no_targets = np.zeros(0, self.dtype)
        self._no_buffer = np.zeros(0, self.dtype)

    @classmethod
    def supports(cls, model) -> bool:
        return bool(model.layers) and model.output_shapes is not None and \
            all(type(layer) in _KINDS for layer in model.layers) and len(model.output_shapes[-1]) == 1

    def prefers_blas(self, N) -> bool:
        """True when a batch of N runs faster op by op with BLAS products (``op_by_op``)
        than in one fused call (see ``BLAS_MIN_MACS``)."""
        return not self.has_conv and blas_pays(N * self.dense_macs)

    def matches(self, model) -> bool:
        return self.layers == model.layers  # layers compare by identity: ~40 ns

    def workspace(self, N):
        """(WF, WI, A, S, runner) for batch size N, reused from call to call: the workspace
        arrays that ``engine.kernels`` describes, views of two of its buffers (activations,
        scalars), and ``engine.kernels.run`` or ``op_by_op.run`` (see ``prefers_blas``)."""
        space = self._workspaces.get(N)
        if space is None:
            if len(self._workspaces) >= _WORKSPACES_KEPT:
                oldest = next(iter(self._workspaces))
                self._workspaces.pop(oldest)
                self._sgd_hyper.pop(oldest, None)
            ops = self.ops.reshape(-1)
            WI = np.zeros(op.HEADER + ops.size + N * self.arg_size, np.int64)
            line = op.ALIGN_BYTES // self.dtype.itemsize
            a0 = op.S_SIZE
            a1 = a0 + N * self.act_size
            d0 = -(-a1 // line) * line
            d1 = d0 + 2 * N * self.max_size
            x0 = -(-d1 // line) * line
            WI[:op.H_X + 1] = N, len(self.ops), self.cols_size, a0, a1, d0, d1, x0
            WI[op.HEADER:op.HEADER + ops.size] = ops
            WF = _aligned_zeros(x0 + N * self.cols_size + self.scratch_size, self.dtype)
            S = WF[:op.S_SIZE]
            S[op.S_N], S[op.S_ONE], S[op.S_DECAY] = N, 1, 1
            op_by_op = self.has_strided_conv or self.prefers_blas(N)
            runner = _engine_module("op_by_op" if op_by_op else "kernels").run
            space = (WF, WI, WF[a0:a1], S, runner)
            self._workspaces[N] = space
        return space

    # -- entry points (the caller checked the backend and the model) ----------------------
    # The Python here is a large share of a small model's step (BENCHMARKS.md), so every
    # attribute lookup shows: hence the fast checks first and the lookups cached.

    def train_step(self, model, x, t, loss, optimizer):
        """One fused step; returns the loss, or None when loss or optimizer is not supported."""
        if loss is not self._loss or optimizer is not self._optimizer:
            if not self._bind(model, loss, optimizer):
                return None
        if not (x.__class__ is np.ndarray and x.dtype is self.dtype and x.shape[1:] == self.input_shape
                and x.shape[0]):
            x = model.check_input(x)
        N = x.shape[0]
        labels, targets = self._no_labels, self._no_targets  # the kernel reads labels if any
        t_array = t if t.__class__ is np.ndarray else np.asarray(t)
        # ravel(): a view when contiguous, else a contiguous copy (numba would compile anew
        # for a strided array)
        if t_array.dtype is _INT64 and t_array.shape == (N,):
            labels = t_array.ravel()
        elif t_array.dtype is self.dtype and t_array.shape == (N, self.classes):
            targets = t_array.ravel()
        else:  # other dtypes or shapes: the layer path's checks convert, or raise its errors
            labels, targets = self._checked_targets(model, x, t_array, loss)
        WF, WI, A, S, runner = self._workspaces.get(N) or self.workspace(N)
        if self.dropouts:
            self._write_masks(A, N)
        if self._opt_kind == op.SGD_UPDATE:
            hyper = (optimizer.lr, optimizer.momentum, optimizer.weight_decay)
            if self._sgd_hyper.get(N) != hyper:  # a numpy slice assignment is slow next to a small step
                S[_SGD_SLOTS] = hyper
                self._sgd_hyper[N] = hyper
            # looked up on every call: a user may replace a buffer (to reset momentum, say)
            buf1, buf2 = optimizer.buffers["velocity"], self._no_buffer
        else:
            step = optimizer.step_count + 1
            S[_ADAM_SLOTS] = op.adam_scalars(optimizer.lr, optimizer.beta1, optimizer.beta2, optimizer.eps, step)
            S[op.S_DECAY] = op.decay_factor(optimizer.lr, optimizer.decoupled_decay)
            self._sgd_hyper.pop(N, None)
            buffers = optimizer.buffers
            buf1, buf2 = buffers["m"], buffers["v"]
        value = runner(x.ravel(), labels, targets, model.parameter_vector, model.gradient_vector, WF, WI,
                       self._loss_kind, self._opt_kind, buf1, buf2)
        if value < 0 and S[op.S_STATUS] != 0:  # a loss may be negative; a status is not a loss
            self._raise_for(model, value, x, t_array, loss)
        optimizer.step_count += 1
        return value

    def _write_masks(self, A, N):
        """Each dropout's mask for this step into its place in A (the layer draws it: the same
        mask the layer path would use)."""
        for layer, shape, size, offset in self.dropouts:
            A[N * offset:N * (offset + size)] = layer.mask((N, *shape), self.dtype).reshape(-1)

    def _bind(self, model, loss, optimizer) -> bool:
        """Remember loss and optimizer for the calls to come; False if either is not supported."""
        loss_kind = _LOSSES.get(type(loss))
        opt_kind = _OPTIMIZERS.get(type(optimizer))
        if loss_kind is None or opt_kind is None or optimizer.model is not model:
            return False
        self._loss, self._optimizer, self._loss_kind, self._opt_kind = loss, optimizer, loss_kind, opt_kind
        return True

    def _checked_targets(self, model, x, t, loss):
        """(labels, targets), one of them empty, from targets of another dtype or form,
        converted as the layer path converts them, or its error."""
        model.check_input(x)  # an input error comes first, as in the layer path
        N, K = x.shape[0], self.classes
        checked = check_targets(np.empty((N, K), self.dtype), t, type(loss).__name__)
        if checked.ndim == 1:
            return checked.astype(np.int64, copy=False), self._no_targets
        return self._no_labels, np.ascontiguousarray(checked).reshape(-1)

    def predict(self, model, x):
        """Outputs (N, classes) for inputs (N, *input_shape); nothing kept."""
        if not (x.__class__ is np.ndarray and x.dtype is self.dtype and x.shape[1:] == self.input_shape
                and x.shape[0]):
            x = model.check_input(x)
        N = x.shape[0]
        WF, WI, A, _, runner = self._workspaces.get(N) or self.workspace(N)
        status = runner(x.ravel(), self._no_labels, self._no_targets, model.parameter_vector,
                        model.gradient_vector, WF, WI, 0, op.FORWARD_ONLY, self._no_buffer, self._no_buffer)
        if status < 0:
            model.check_input(x)  # raises the layer path's error for NaN/inf
        start = N * self.output_offset
        return A[start:start + N * self.classes].reshape(N, self.classes).copy()

    # -- validation ---------------------------------------------------------------------------

    def _raise_for(self, model, status, x, t, loss):
        if status == op.BAD_INPUT:
            model.check_input(x)
        check_targets(np.empty((x.shape[0], self.classes), self.dtype), t, type(loss).__name__)
        raise AssertionError(f"fused step reported status {status} but the inputs check out")


def conv_buffer_sizes(shape, out_shape, kernel_size, stride, padding):
    """(per-sample region, per-batch scratch) in X for a convolution (see ``kernels``):
    stride 1 keeps each zero-padded image, with a wide output/δ and a padded dx as scratch;
    other strides keep the im2col matrix, with one image's dcols as scratch.
    shape (C, H, W), out_shape (F, OH, OW); sizes in elements."""
    (C, H, W), (F, OH, OW) = shape, out_shape
    (kh, kw), (ph, pw) = kernel_size, padding
    if tuple(stride) == (1, 1):
        padded = C * (H + 2 * ph) * (W + 2 * pw) + kw
        return padded, F * OH * (W + 2 * pw) + padded
    cols = C * kh * kw * OH * OW
    return cols, cols


def _aligned_zeros(size, dtype):
    """np.zeros(size, dtype) starting on an op.ALIGN_BYTES boundary."""
    dtype = np.dtype(dtype)
    spare = op.ALIGN_BYTES // dtype.itemsize
    buffer = np.zeros(size + spare, dtype)
    start = (-buffer.ctypes.data % op.ALIGN_BYTES) // dtype.itemsize
    return buffer[start:start + size]


def _param_offsets(model):
    """id(layer) -> (offset of W, offset of b) in ``model.parameter_vector``."""
    base = model.parameter_vector.__array_interface__["data"][0]
    item = model.dtype.itemsize
    return {id(layer): tuple((layer.params[name].__array_interface__["data"][0] - base) // item
                             for name in ("W", "b"))
            for layer in model.layers if layer.params}


def program_for(model):
    """A new ``Program`` for the model (``Sequential`` keeps it); None if a layer is not supported."""
    if not Program.supports(model):
        return None
    return Program(model)
