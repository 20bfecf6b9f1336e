"""Layers: each ``forward(x)`` keeps what its ``backward(dout)`` needs and returns the
output; ``backward`` overwrites ``grads`` (no accumulation, no zero_grad) and returns
∂E/∂x. ``predict(x)`` is ``forward`` without keeping anything.

Shapes are per batch: vectors (N, features), images (N, C, H, W). ``output_shape`` works on
the per-sample shape (no N) and is how ``Sequential`` checks that layers fit together.

A layer kind names itself for model definitions: ``toml_type`` (the ``type`` of a
``[[layers]]`` table), ``toml_required`` and ``toml_optional`` (its keys: the constructor's
arguments) and ``from_below`` (arguments taken from the shape below it). ``LAYER_CLASSES``
lists the kinds ``modeldef`` knows.
"""

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..exc import ModelDefinitionError
from .backend import kernels

if TYPE_CHECKING:
    from numpy.typing import DTypeLike


_SHAPES_ONLY = contextvars.ContextVar("shapes_only", default=False)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Within the block, layers are made without their parameter arrays: ``param_shapes`` and
    ``output_shape`` work, nothing else does. For sizing a model before allocating it."""
    token = _SHAPES_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _pair(value: object, what: str) -> tuple[int, int]:
    # A float or bool (e.g. `kernel_size = 3.0` in TOML) must be refused here, not crash or pass as 1.
    if _is_int(value):
        pair = (value, value)
    else:
        pair = tuple(value) if isinstance(value, (list, tuple, np.ndarray)) else ()
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise ModelDefinitionError(f"{what} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _positive(value: object, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ModelDefinitionError(f"{what} must be a positive int, got {value!r}")
    return int(value)


class Layer:
    """Base class. Layers with parameters fill ``params`` and ``grads`` (same keys, shapes)."""

    toml_type: str | None = None   # None: not available in model definitions
    toml_required: tuple = ()
    toml_optional: tuple = ()

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}

    @classmethod
    def from_below(cls, input_shape: tuple) -> dict:
        """Constructor arguments a model definition may leave out, from the per-sample shape
        of the layer below (``in_features`` of a Dense layer, say)."""
        return {}

    def param_shapes(self) -> dict:
        """Name -> shape of every parameter (empty for layers without any)."""
        return {}

    def init_params(self, rng: np.random.Generator) -> None:
        """Fill ``params`` with fresh initial values drawn from ``rng``."""

    def output_shape(self, input_shape: tuple) -> tuple:
        """Per-sample output shape for a per-sample ``input_shape``; raises if it does not fit."""
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def _allocate(self, dtype: "DTypeLike" = np.float32, rng: np.random.Generator | None = None) -> None:
        """Own parameter arrays, for a layer used on its own (``Sequential`` rebinds them)."""
        if _SHAPES_ONLY.get():
            return
        self.params = {k: np.zeros(s, dtype) for k, s in self.param_shapes().items()}
        self.grads = {k: np.zeros(s, dtype) for k, s in self.param_shapes().items()}
        self.init_params(rng if rng is not None else np.random.default_rng())

    def _describe(self) -> str:
        return f"{type(self).__name__}()"

    def __repr__(self) -> str:
        return self._describe()


def _uniform_fan_in(layer: Layer, rng: np.random.Generator, fan_in: int) -> None:
    # PyTorch's default for Linear/Conv2d: U(-1/√fan_in, 1/√fan_in) for weights and bias,
    # so a recipe copied from PyTorch starts from the same distribution.
    bound = 1 / math.sqrt(fan_in)
    for name, value in layer.params.items():
        value[...] = rng.uniform(-bound, bound, size=value.shape)


class Dense(Layer):
    """Fully connected: net = x · W + b, with W (in_features, out_features), b (out_features,)."""

    toml_type, toml_required, toml_optional = "dense", ("out_features",), ("in_features",)

    @classmethod
    def from_below(cls, input_shape: tuple) -> dict:
        return {"in_features": int(np.prod(input_shape))}

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = _positive(in_features, "Dense in_features")
        self.out_features = _positive(out_features, "Dense out_features")
        self._allocate()

    def param_shapes(self) -> dict:
        return {"W": (self.in_features, self.out_features), "b": (self.out_features,)}

    def init_params(self, rng: np.random.Generator) -> None:
        _uniform_fan_in(self, rng, self.in_features)

    def output_shape(self, input_shape: tuple) -> tuple:
        if tuple(input_shape) != (self.in_features,):
            raise ModelDefinitionError(
                f"expects input of shape ({self.in_features},), got {tuple(input_shape)}"
                + ("; put a Flatten before it" if len(input_shape) > 1 else ""))
        return (self.out_features,)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return kernels().dense_forward(x, self.params["W"], self.params["b"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return kernels().dense_forward(x, self.params["W"], self.params["b"])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return kernels().dense_backward(dout, self.x, self.params["W"], self.grads["W"], self.grads["b"])

    def _describe(self) -> str:
        return f"Dense({self.in_features}, {self.out_features})"


class Conv2D(Layer):
    """2-D convolution (cross-correlation) over NCHW images, zero padding.

    W (out_channels, in_channels, kh, kw), b (out_channels,);
    OH = (H + 2·ph − kh) // sh + 1, likewise OW.
    """

    toml_type = "conv2d"
    toml_required, toml_optional = ("out_channels", "kernel_size"), ("in_channels", "stride", "padding")

    @classmethod
    def from_below(cls, input_shape: tuple) -> dict:
        return {"in_channels": input_shape[0]}

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] | list[int],
                 stride: int | tuple[int, int] | list[int] = 1, padding: int | tuple[int, int] | list[int] = 0):
        super().__init__()
        self.in_channels = _positive(in_channels, "Conv2D in_channels")
        self.out_channels = _positive(out_channels, "Conv2D out_channels")
        self.kernel_size = _pair(kernel_size, "Conv2D kernel_size")
        self.stride = _pair(stride, "Conv2D stride")
        self.padding = _pair(padding, "Conv2D padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ModelDefinitionError(
                f"Conv2D needs kernel_size >= 1, stride >= 1, padding >= 0; got "
                f"{self.kernel_size}, {self.stride}, {self.padding}")
        self._allocate()

    def param_shapes(self) -> dict:
        return {"W": (self.out_channels, self.in_channels) + self.kernel_size, "b": (self.out_channels,)}

    def init_params(self, rng: np.random.Generator) -> None:
        _uniform_fan_in(self, rng, self.in_channels * self.kernel_size[0] * self.kernel_size[1])

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ModelDefinitionError(
                f"expects input of shape ({self.in_channels}, H, W), got {tuple(input_shape)}")
        _, H, W = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if H + 2 * ph < kh or W + 2 * pw < kw:
            raise ModelDefinitionError(
                f"kernel {kh}x{kw} is larger than the padded input {H + 2 * ph}x{W + 2 * pw}")
        return (self.out_channels, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, self._cache = kernels().conv2d_forward(x, self.params["W"], self.params["b"], self.stride, self.padding)
        return y

    def predict(self, x: np.ndarray) -> np.ndarray:
        return kernels().conv2d_forward(x, self.params["W"], self.params["b"], self.stride, self.padding)[0]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return kernels().conv2d_backward(dout, self._cache, self.params["W"], self.grads["W"],
                                         self.grads["b"], self.stride, self.padding)

    def _describe(self) -> str:
        extra = ""
        if self.stride != (1, 1):
            extra += f", stride={self.stride[0] if self.stride[0] == self.stride[1] else self.stride}"
        if self.padding != (0, 0):
            extra += f", padding={self.padding[0] if self.padding[0] == self.padding[1] else self.padding}"
        k = self.kernel_size
        return f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={k[0] if k[0] == k[1] else k}{extra})"


class _Pool2D(Layer):
    """A window over each plane: pool_size, stride defaulting to pool_size; no padding, floor division."""

    toml_required, toml_optional = ("pool_size",), ("stride",)

    def __init__(self, pool_size: int | tuple[int, int] | list[int],
                 stride: int | tuple[int, int] | list[int] | None = None):
        super().__init__()
        name = type(self).__name__
        self.pool_size = _pair(pool_size, f"{name} pool_size")
        self.stride = self.pool_size if stride is None else _pair(stride, f"{name} stride")
        if min(self.pool_size) < 1 or min(self.stride) < 1:
            raise ModelDefinitionError(f"{name} needs pool_size and stride >= 1, got {self.pool_size}, {self.stride}")

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3:
            raise ModelDefinitionError(f"expects input of shape (C, H, W), got {tuple(input_shape)}")
        C, H, W = input_shape
        (kh, kw), (sh, sw) = self.pool_size, self.stride
        if H < kh or W < kw:
            raise ModelDefinitionError(f"pool {kh}x{kw} is larger than the input {H}x{W}")
        return (C, (H - kh) // sh + 1, (W - kw) // sw + 1)

    def _describe(self) -> str:
        p, s, name = self.pool_size, self.stride, type(self).__name__
        pool = p[0] if p[0] == p[1] else p
        return f"{name}({pool})" if s == p else f"{name}({pool}, stride={s[0] if s[0] == s[1] else s})"


class MaxPool2D(_Pool2D):
    """Max over pool_size windows; stride defaults to pool_size. No padding, floor division."""

    toml_type = "maxpool2d"

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x_shape = x.shape
        y, self.argmax = kernels().maxpool_forward(x, self.pool_size, self.stride)
        return y

    def predict(self, x: np.ndarray) -> np.ndarray:
        return kernels().maxpool_forward(x, self.pool_size, self.stride)[0]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return kernels().maxpool_backward(dout, self.argmax, self.x_shape, self.pool_size, self.stride)


class AvgPool2D(_Pool2D):
    """Mean over pool_size windows; stride defaults to pool_size. No padding, floor division.
    Backward, each window's δ is shared equally by its kh·kw inputs."""

    toml_type = "avgpool2d"

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x_shape = x.shape
        return kernels().avgpool_forward(x, self.pool_size, self.stride)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return kernels().avgpool_forward(x, self.pool_size, self.stride)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return kernels().avgpool_backward(dout, self.x_shape, self.pool_size, self.stride)


class GlobalAvgPool2D(Layer):
    """(N, C, H, W) -> (N, C): the mean of each channel's plane. No parameters: a CNN can end
    in a small Dense layer of C inputs instead of a large one over every position."""

    toml_type = "globalavgpool2d"

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3:
            raise ModelDefinitionError(f"expects input of shape (C, H, W), got {tuple(input_shape)}")
        return (input_shape[0],)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x_shape = x.shape
        return kernels().global_avgpool_forward(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return kernels().global_avgpool_forward(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return kernels().global_avgpool_backward(dout, self.x_shape)


class Dropout(Layer):
    """Inverted dropout while training: each value is zeroed with probability ``p`` and the
    rest scaled by 1/(1 − p), so that inference (``predict``) is the identity.

    The mask is a pure function of (``seed``, ``step``, batch shape): ``Sequential.train_step``
    sets ``step`` to the optimizer's step count, so a resumed run draws the masks an
    uninterrupted one would. ``seed`` None: the model's seed and the layer's position choose it
    (``Sequential``).
    """

    toml_type, toml_required, toml_optional = "dropout", ("p",), ("seed",)

    def __init__(self, p: float, seed: int | None = None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p < 1:
            raise ModelDefinitionError(f"Dropout p must be a number in [0, 1), got {p!r}")
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise ModelDefinitionError(f"Dropout seed must be an int >= 0, got {seed!r}")
        self.p = float(p)
        self.seed = None if seed is None else int(seed)
        self.step = 0
        self.mask_used = None          # the last forward's mask, for backward

    def mask(self, shape: tuple, dtype: "DTypeLike") -> np.ndarray:
        """The mask for a batch of ``shape`` at ``self.step``: 0 with probability p, else
        1/(1 − p), in ``dtype``. Drawn in float32 whatever the dtype, so that float32 and
        float64 models of one seed drop the same units."""
        dtype = np.dtype(dtype)
        draws = np.random.default_rng([self.seed or 0, self.step]).random(shape, dtype=np.float32)
        return (draws >= np.float32(self.p)) * dtype.type(1 / (1 - self.p))

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.p:
            self.mask_used = None
            return x
        self.mask_used = self.mask(x.shape, x.dtype)
        return kernels().dropout_forward(x, self.mask_used)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.mask_used is None:
            return dout
        return kernels().dropout_backward(dout, self.mask_used)

    def _describe(self) -> str:
        return f"Dropout({self.p:g})"


class Flatten(Layer):
    """(N, C, H, W) -> (N, C·H·W) in C order, as ``numpy.reshape``."""

    toml_type = "flatten"

    def output_shape(self, input_shape: tuple) -> tuple:
        return (int(np.prod(input_shape)),)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self.x_shape)


class _Activation(Layer):
    """y = f(z) elementwise; backward multiplies δ by f′, written with y."""

    name = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.y = getattr(kernels(), f"{self.name}_forward")(x)
        return self.y

    def predict(self, x: np.ndarray) -> np.ndarray:
        return getattr(kernels(), f"{self.name}_forward")(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return getattr(kernels(), f"{self.name}_backward")(dout, self.y)


class ReLU(_Activation):
    """f(z) = max(z, 0); f′ = 1 where z > 0."""
    name = toml_type = "relu"


class Sigmoid(_Activation):
    """f(z) = 1 / (1 + e^−z); f′ = y(1 − y)."""
    name = toml_type = "sigmoid"


class Tanh(_Activation):
    """f(z) = tanh z; f′ = 1 − y²."""
    name = toml_type = "tanh"


LAYER_CLASSES = (Dense, Conv2D, MaxPool2D, Flatten, ReLU, Sigmoid, Tanh,   # in model definitions
                 AvgPool2D, GlobalAvgPool2D, Dropout)
