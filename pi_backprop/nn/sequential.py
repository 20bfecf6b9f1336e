"""``Sequential``: layers applied in order, with one flat parameter vector.

Every layer's ``params[...]`` and ``grads[...]`` arrays are views into
``parameter_vector`` and ``gradient_vector``: writing into them in place takes effect,
and an optimizer updates the whole model with a few vector operations.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..exc import InputError, ModelDefinitionError, ShapeError
from . import backend as _backend
from .backend import get_backend
from .layers import Dense, Dropout, Layer

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike

    from .losses import Loss
    from .optim import Optimizer

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_program_for = None  # fused.program_for, imported on first use (fused imports no numba)


class Sequential:
    """A feed-forward network.

    layers      : list of ``Layer``
    seed        : int or None; the initial weights are a pure function of it
    dtype       : float32 (default) or float64 (for gradient checks)
    input_shape : per-sample input shape, e.g. (32,) or (1, 28, 28); inferred from a
                  leading ``Dense``, otherwise taken from the first batch seen
    """

    def __init__(self, layers: Iterable[Layer], seed: int | None = None, dtype: "DTypeLike" = np.float32, *,
                 input_shape: Iterable[int] | None = None):
        self.layers = list(layers)
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ModelDefinitionError(f"layer {index} is a {type(layer).__name__}, not a pi_backprop layer")
        self.dtype = np.dtype(dtype)
        if self.dtype not in _DTYPES:
            raise ModelDefinitionError(f"dtype must be float32 or float64, got {self.dtype}")
        self.seed = seed
        self.definition = None  # set by ModelDefinition.build()
        self._forward_shape = None  # output shape of the last forward(): what backward() takes
        self._fused_program = None  # engine.program.Program, built on the numba backend's first step
        if input_shape is None and self.layers and isinstance(self.layers[0], Dense):
            input_shape = (self.layers[0].in_features,)
        self.input_shape = None
        self.output_shapes = None
        if input_shape is not None:
            self._fit_shapes(tuple(int(d) for d in input_shape))
        self._bind_parameters(np.random.default_rng(seed))
        self.dropouts = [layer for layer in self.layers if isinstance(layer, Dropout)]
        self._seed_dropouts(seed)

    def _seed_dropouts(self, seed: int | None) -> None:
        """A Dropout layer without a seed of its own gets one from the model's seed and its
        position (random if the model's is None), apart from the weights' random stream."""
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Dropout) and layer.seed is None:
                entropy = None if seed is None else [seed, index]
                layer.seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])

    # -- parameters -------------------------------------------------------------------------

    def _bind_parameters(self, rng: np.random.Generator) -> None:
        shapes = [(layer, name, shape) for layer in self.layers for name, shape in layer.param_shapes().items()]
        total = sum(int(np.prod(shape)) for _, _, shape in shapes)
        self.parameter_vector = np.zeros(total, self.dtype)
        self.gradient_vector = np.zeros(total, self.dtype)
        offset = 0
        for layer in self.layers:
            layer.params, layer.grads = {}, {}
            for name, shape in layer.param_shapes().items():
                size = int(np.prod(shape))
                layer.params[name] = self.parameter_vector[offset:offset + size].reshape(shape)
                layer.grads[name] = self.gradient_vector[offset:offset + size].reshape(shape)
                offset += size
            layer.init_params(rng)

    def parameters(self) -> list:
        """Every parameter array (views into ``parameter_vector``), layer by layer, W before b."""
        return [value for layer in self.layers for value in layer.params.values()]

    def named_parameters(self) -> list:
        """``[("<layer index>.<name>", array), ...]`` in the order of ``parameters()``."""
        return [(f"{index}.{name}", value) for index, layer in enumerate(self.layers)
                for name, value in layer.params.items()]

    def named_gradients(self) -> list:
        return [(f"{index}.{name}", value) for index, layer in enumerate(self.layers)
                for name, value in layer.grads.items()]

    @property
    def num_parameters(self) -> int:
        return int(self.parameter_vector.size)

    # -- shapes -----------------------------------------------------------------------------

    def _fit_shapes(self, input_shape: tuple) -> None:
        """Walk the per-sample shape through the layers; raise naming the layer that does not fit."""
        shapes, shape = [], input_shape
        for index, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ModelDefinitionError as error:
                raise ModelDefinitionError(f"layer {index} ({type(layer).__name__}): {error}") from None
            shapes.append(shape)
        self.input_shape, self.output_shapes = input_shape, shapes

    def check_input(self, x: "ArrayLike") -> np.ndarray:
        """Return ``x`` as a C-contiguous array of the model dtype, or raise before any work."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ShapeError(f"input must be a batch (N, ...) with N >= 1, got shape {x.shape}")
        if self.input_shape is None:
            self._fit_shapes(x.shape[1:])
        elif x.shape[1:] != self.input_shape:
            raise ShapeError(f"layer 0 ({type(self.layers[0]).__name__}): expects input of shape "
                             f"(N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        if x.dtype != self.dtype or not x.flags.c_contiguous:
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise InputError(f"input must be numeric, got dtype {x.dtype}")
            x = np.ascontiguousarray(x, dtype=self.dtype)
        if not np.isfinite(x).all():
            raise InputError("input contains NaN or inf values")
        return x

    # -- running ----------------------------------------------------------------------------

    def forward(self, x: "ArrayLike") -> np.ndarray:
        """Outputs (N, out) for inputs (N, *input_shape), keeping what ``backward`` needs."""
        x = self.check_input(x)
        for layer in self.layers:
            x = layer.forward(x)
        self._forward_shape = x.shape
        return x

    def backward(self, dout: "ArrayLike") -> np.ndarray:
        """Back-propagate ∂E/∂output (N, out) of the last ``forward``; overwrite every layer's
        grads; return ∂E/∂x."""
        delta = np.asarray(dout, dtype=self.dtype)
        if self._forward_shape is None:
            raise InputError("backward() needs a forward() first: it back-propagates through "
                             "what the last forward() computed")
        if delta.shape != self._forward_shape:
            raise ShapeError(f"backward() expects dL/doutput of shape {self._forward_shape} "
                             f"(the last forward's output), got {delta.shape}")
        for layer in reversed(self.layers):
            delta = layer.backward(delta)
        return delta

    def predict(self, x: "ArrayLike") -> np.ndarray:
        """Outputs for inputs, for inference: nothing is kept for a backward pass.

        With the numba backend this is one compiled call (see ``engine.program``).
        """
        program = self._fused_program_or_none()
        if program is not None:
            outputs = program.predict(self, x)
            if outputs is not None:
                return outputs
        x = self.check_input(x)
        for layer in self.layers:
            x = layer.predict(x)
        return x

    def train_step(self, x: "ArrayLike", t: "ArrayLike", loss: "Loss", optimizer: "Optimizer") -> float:
        """One step of training: forward, loss, backward, optimizer update. Returns the loss.

        With the numba backend, a supported model (the layers of this package), loss
        (``MSELoss``, ``SoftmaxCrossEntropy``) and optimizer (``SGD``, ``Adam``) run as one
        compiled call (``engine.program``): the parameters, ``layer.grads`` and the optimizer state
        end up as the layer path leaves them (to rounding), but the layers' and the loss's
        forward caches are not refreshed: call ``forward`` before calling ``backward`` yourself.
        """
        for layer in self.dropouts:     # the masks of this step (a pure function of it)
            layer.step = optimizer.step_count
        program = self._fused_program_or_none()
        if program is not None:
            value = program.train_step(self, x, t, loss, optimizer)
            if value is not None:
                return value
        value = loss.forward(self.forward(x), t)
        self.backward(loss.backward())
        optimizer.step()
        return value

    def _fused_program_or_none(self):
        """The compiled-program path of the numba backend, when it applies to this model."""
        # the attribute first, get_backend() only until a backend is chosen (it shows in a small step)
        if (_backend.current or get_backend()) != "numba" or self.input_shape is None:
            return None
        program = self._fused_program
        if program is not None and program.matches(self):
            return program
        global _program_for
        if _program_for is None:  # imported once, not per step: an import costs a share of a small step
            from .engine.program import program_for as _program_for
        self._fused_program = _program_for(self)
        return self._fused_program

    # -- description ------------------------------------------------------------------------

    def __repr__(self) -> str:
        name = type(self).__name__
        head = f"{name}(input_shape={self.input_shape}, dtype={self.dtype.name}, backend={get_backend()})"
        rows = [("#", "layer", "output shape", "params")]
        shapes = self.output_shapes or [None] * len(self.layers)
        for index, (layer, shape) in enumerate(zip(self.layers, shapes)):
            count = sum(int(np.prod(s)) for s in layer.param_shapes().values())
            rows.append((str(index), repr(layer), "?" if shape is None else str(shape), f"{count:,}"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [head]
        for row in rows:
            index, layer, shape, count = row
            lines.append(f"  {index:>{widths[0]}}  {layer:<{widths[1]}}  {shape:<{widths[2]}}  {count:>{widths[3]}}")
        lines.append(f"  total parameters: {self.num_parameters:,}")
        return "\n".join(lines)
