"""Losses: ``forward(y, t)`` returns the mean loss over the batch as a float and keeps what
``backward()`` needs; ``backward()`` returns ∂E/∂y with the shape of ``y``.

Targets ``t`` are int class indices (N,) or one-hot / real targets (N, C).
"""

from typing import TYPE_CHECKING

import numpy as np

from ..exc import InputError, ShapeError

if TYPE_CHECKING:
    from typing import Protocol

    from numpy.typing import ArrayLike, DTypeLike

    class Loss(Protocol):
        """For hints only: what ``Sequential.train_step`` and ``gradcheck`` use of a loss (the
        two below, or any object with these methods: the layer path calls nothing else)."""

        def forward(self, y: np.ndarray, t: ArrayLike) -> float: ...

        def backward(self) -> np.ndarray: ...


def check_targets(y: np.ndarray, t: "ArrayLike", where: str) -> np.ndarray:
    """Validate targets for outputs ``y`` (N, C); return them as an array of matching dtype.

    Int labels (N,) must lie in [0, C); real targets must have the shape of ``y``.
    """
    t = np.asarray(t)
    N, C = y.shape
    if t.ndim == 1 and (np.issubdtype(t.dtype, np.integer) or t.dtype == bool):
        if t.shape[0] != N:
            raise ShapeError(f"{where}: {t.shape[0]} labels for a batch of {N}")
        if N and (t.min() < 0 or t.max() >= C):
            bad = t[(t < 0) | (t >= C)][0]
            raise InputError(f"{where}: label {bad} is out of range; the model has {C} classes (0..{C - 1})")
        return t.astype(np.intp, copy=False)
    if t.shape != y.shape:
        raise ShapeError(f"{where}: targets of shape {t.shape} do not match outputs {y.shape}; "
                         f"give int labels (N,) or targets (N, {C})")
    if not np.isfinite(t).all():
        raise InputError(f"{where}: targets contain NaN or inf")
    return t.astype(y.dtype, copy=False)


def one_hot(labels: np.ndarray, num_classes: int, dtype: "DTypeLike" = np.float32) -> np.ndarray:
    """Int labels (N,) -> (N, num_classes) with a 1 at each label."""
    out = np.zeros((labels.shape[0], num_classes), dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


class MSELoss:
    """E = ½·Σ(y − t)² per sample, averaged over the batch; ∂E/∂y = (y − t) / N.

    Followed by the output layer's Sigmoid.backward this gives the classic output
    δ = (y − t)·y(1 − y) (divided by N for the batch mean).
    """

    def forward(self, y: np.ndarray, t: "ArrayLike") -> float:
        y = _outputs(y, "MSELoss")
        t = check_targets(y, t, "MSELoss")
        if t.ndim == 1:
            t = one_hot(t, y.shape[1], y.dtype)
        self.diff = y - t
        return float(0.5 * np.sum(self.diff * self.diff) / y.shape[0])

    def backward(self) -> np.ndarray:
        return self.diff / self.diff.dtype.type(self.diff.shape[0])

    def __repr__(self) -> str:
        return "MSELoss()"


class SoftmaxCrossEntropy:
    """E = −log softmax(y)[t], averaged over the batch; ∂E/∂y = (softmax(y) − t) / N.

    Real targets (N, C) give E = −Σ t·log softmax(y), as PyTorch's probability targets;
    ∂E/∂y = (softmax(y)·Σt − t) / N, which is the formula above for rows summing to 1.

    Computed with the largest logit subtracted, so large logits do not overflow.
    """

    def forward(self, y: np.ndarray, t: "ArrayLike") -> float:
        y = _outputs(y, "SoftmaxCrossEntropy")
        t = check_targets(y, t, "SoftmaxCrossEntropy")
        shifted = y - y.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_sum
        self.probs = np.exp(log_probs)
        self.targets = one_hot(t, y.shape[1], y.dtype) if t.ndim == 1 else t
        return float(-np.sum(self.targets * log_probs) / y.shape[0])

    def backward(self) -> np.ndarray:
        row_sums = self.targets.sum(axis=1, keepdims=True)  # 1 for labels and one-hot rows
        return (self.probs * row_sums - self.targets) / self.probs.dtype.type(self.probs.shape[0])

    def __repr__(self) -> str:
        return "SoftmaxCrossEntropy()"


def _outputs(y: object, where: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.ndim != 2 or y.shape[0] == 0:
        shape = getattr(y, "shape", type(y).__name__)
        raise ShapeError(f"{where}: expects model outputs of shape (N, classes) with N >= 1, got {shape}")
    return y
