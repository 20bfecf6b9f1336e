"""Central-difference gradient check: the independent witness for every ``backward``."""

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .losses import Loss
    from .sequential import Sequential


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max |a − n| over the tensor, relative to the tensor's largest gradient max(|a|, |n|).

    Scaled per tensor rather than per element: an element whose gradient is ~1e-9 has a
    central difference dominated by rounding (|E|·1e-16/ε), which says nothing about backprop.
    """
    if analytic.size == 0:
        return 0.0
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)), 1e-12)
    return float(np.max(np.abs(analytic - numeric)) / scale)


def numerical_gradient(f: Callable[[], float], array: np.ndarray, eps: float) -> np.ndarray:
    """∂f/∂array by central differences, (f(a + ε) − f(a − ε)) / 2ε, one element at a time.

    ``array`` is perturbed in place and restored exactly.
    """
    grad = np.zeros(array.shape, np.float64)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        f_plus = f()
        flat[i] = original - eps
        f_minus = f()
        flat[i] = original
        out[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def gradcheck(model: "Sequential", loss: "Loss", x: "ArrayLike", t: "ArrayLike", eps: float = 1e-6) -> dict:
    """Compare backprop with central differences for every parameter of ``model``.

    Use a float64 model: in float32 rounding swamps any ε. Returns
    ``{"<layer index>.<param>": max relative error}``; the model's grads are left as
    backprop computed them at the unperturbed parameters.
    """
    def value():
        return loss.forward(model.forward(x), t)

    value()
    model.backward(loss.backward())
    analytic = {name: grad.copy() for name, grad in model.named_gradients()}
    return {name: relative_error(analytic[name], numerical_gradient(value, param, eps))
            for name, param in model.named_parameters()}
