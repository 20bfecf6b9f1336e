"""Optimizers. Each walks the model's one flat parameter vector (every ``params`` array is
a view into it), so an update is a handful of vector operations whatever the depth.

``state_dict()`` / ``load_state_dict()`` carry everything a checkpoint needs to resume
bit-exactly: hyper-parameters, the step count and every buffer.
"""

from typing import TYPE_CHECKING

import numpy as np

from ..exc import CheckpointError, ConfigError
from .backend import kernels

if TYPE_CHECKING:
    from .sequential import Sequential


def _non_negative(value: float, what: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a finite number >= 0, got {value}")
    return value


class Optimizer:
    kind = None
    hyper_names = ()

    def __init__(self, model: "Sequential"):
        self.model = model
        self.step_count = 0
        self.buffers = {}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _non_negative(value, f"{type(self).__name__} lr")

    def hyper(self) -> dict:
        return {name: getattr(self, name) for name in self.hyper_names}

    def state_dict(self) -> dict:
        """``{"kind", "hyper", "step", "buffers": {name: array}}``; arrays are copies."""
        return {"kind": self.kind, "hyper": self.hyper(), "step": self.step_count,
                "buffers": {k: v.copy() for k, v in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict()`` returned: hyper-parameters, step count and buffers,
        copied in (a buffer given as this optimizer's own array, filled already, as a
        checkpoint reads them, stays as it is). The kind and the shapes are checked first."""
        if state.get("kind") != self.kind:
            raise CheckpointError(f"optimizer state is for {state.get('kind')!r}, not {self.kind!r}")
        buffers = state.get("buffers", {})
        for name, target in self.buffers.items():
            source = buffers.get(name)
            if source is None or source.shape != target.shape:
                got = None if source is None else source.shape
                raise CheckpointError(f"optimizer buffer {name!r}: expected shape {target.shape}, got {got}")
        for name, value in state.get("hyper", {}).items():
            if name in self.hyper_names:
                setattr(self, name, value)
        for name, target in self.buffers.items():
            if buffers[name] is not target:
                target[...] = buffers[name]
        self.step_count = int(state["step"])

    def step(self) -> None:
        """Update the model's parameters from its gradients (each optimizer defines it)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum μ and L2 weight decay λ, as
    PyTorch's ``torch.optim.SGD`` (dampening 0, no Nesterov):
    g ← g + λp;  v ← μv + g;  p ← p − η·v.
    """

    kind = "sgd"
    hyper_names = ("lr", "momentum", "weight_decay")

    def __init__(self, model: "Sequential", lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(model)
        self.lr = lr
        self.momentum = _non_negative(momentum, "SGD momentum")
        self.weight_decay = _non_negative(weight_decay, "SGD weight_decay")
        self.buffers = {"velocity": np.zeros_like(model.parameter_vector)}

    def step(self) -> None:
        """Update the parameters from the gradients of the last ``backward``."""
        self.step_count += 1
        kernels().sgd_update(self.model.parameter_vector, self.model.gradient_vector,
                             self.buffers["velocity"], self.lr, self.momentum, self.weight_decay)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba 2015, algorithm 1):
    m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − η·m̂ / (√v̂ + ε).
    """

    kind = "adam"
    hyper_names = ("lr", "beta1", "beta2", "eps")
    decoupled_decay = 0.0   # AdamW's λ; 0: plain Adam

    def __init__(self, model: "Sequential", lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__(model)
        self.lr = lr
        self.beta1, self.beta2 = (float(b) for b in betas)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"Adam betas must lie in [0, 1), got {tuple(betas)}")
        self.eps = _non_negative(eps, "Adam eps")
        self.buffers = {"m": np.zeros_like(model.parameter_vector),
                        "v": np.zeros_like(model.parameter_vector)}

    def step(self) -> None:
        self.step_count += 1
        kernels().adam_update(self.model.parameter_vector, self.model.gradient_vector,
                              self.buffers["m"], self.buffers["v"], self.lr, self.beta1,
                              self.beta2, self.eps, self.step_count, self.decoupled_decay)


class AdamW(Adam):
    """Adam with decoupled weight decay λ (Loshchilov & Hutter 2019), as PyTorch's
    ``torch.optim.AdamW``: p ← p·(1 − ηλ), then the Adam step on the gradient alone (the
    decay never enters m or v, unlike L2 decay added to the gradient)."""

    kind = "adamw"
    hyper_names = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, model: "Sequential", lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(model, lr=lr, betas=betas, eps=eps)
        self.weight_decay = _non_negative(weight_decay, "AdamW weight_decay")

    @property
    def decoupled_decay(self) -> float:
        return self.weight_decay


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
