"""The same recipe in PyTorch: the same samples, initial weights, batch order and optimizer.

``twin_of(trainer)`` is called on a trainer that has not run yet: the architecture comes from
the benchmark's builder (``cli.benchmark.torch_model``), the initial weights are copied from
the trainer's model, the optimizer's hyper-parameters from the trainer's optimizer.
``train(twin, trainer, steps)`` then takes the batch of every step from
``trainer.batch_indices``, so both frameworks see the same batches in the same order. Runs
in float32 on one thread, as the benchmark's single-thread comparison does.
"""

import dataclasses
import importlib.util

import numpy as np

from ..exc import ConfigError

TORCH_HINT = "the PyTorch twin needs torch: pip install 'pi-backprop[bench]'"


def available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _torch():
    try:
        import torch
    except ImportError:
        raise ConfigError(TORCH_HINT) from None
    torch.set_num_threads(1)   # the shared CPUs; the numbers do not depend on it
    return torch


@dataclasses.dataclass
class Twin:
    """A torch network with the trainer's initial weights, its optimizer and loss."""

    net: object
    optimizer: object
    loss: object


def twin_of(trainer) -> Twin:
    """The PyTorch twin of ``trainer`` (a ``training.trainer.Trainer`` before its first step)."""
    torch = _torch()
    from ..cli.benchmark import torch_model
    from ..nn import layers as L

    if trainer.step:
        raise ConfigError(f"the twin must start from the initial weights; the trainer is at step {trainer.step}")
    definition, model = trainer.definition, trainer.model
    try:
        net = torch_model(definition)
    except KeyError as error:   # a layer type the benchmark's builder does not know
        kind = getattr(error.args[0], "__name__", error.args[0])
        raise ConfigError(f"model {definition.name!r}: no PyTorch twin for layer {kind} "
                          "(add it to pi_backprop/cli/benchmark.py, torch_model)") from None
    with torch.no_grad():
        for layer, module in zip(model.layers, net, strict=True):
            for name, value in layer.params.items():
                value = value.T if isinstance(layer, L.Dense) and name == "W" else value   # ours (in, out)
                target = {"W": module.weight, "b": module.bias}[name]
                if tuple(target.shape) != value.shape:
                    raise ConfigError(f"{layer!r}: parameter {name} {value.shape} does not fit torch's "
                                      f"{tuple(target.shape)}")
                target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    return Twin(net, _optimizer(torch, trainer.optimizer, net.parameters()), _loss(torch, definition))


def _optimizer(torch, ours, parameters):
    hyper = ours.hyper()
    if ours.kind == "adam":
        return torch.optim.Adam(parameters, lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"])
    if ours.kind == "adamw":
        return torch.optim.AdamW(parameters, lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"],
                                 weight_decay=hyper["weight_decay"])
    if ours.kind == "sgd":
        return torch.optim.SGD(parameters, lr=hyper["lr"], momentum=hyper["momentum"],
                               weight_decay=hyper["weight_decay"])
    raise ConfigError(f"no PyTorch twin for optimizer {ours.kind!r} (add it to pi_backprop/study/torch_twin.py)")


def _loss(torch, definition):
    if definition.loss == "softmax_cross_entropy":
        return torch.nn.functional.cross_entropy   # batch mean, as ours
    classes = len(definition.classes)

    def mse(y, t):   # ours: ½·Σ(y − t)² per sample, batch mean
        return 0.5 * ((y - torch.nn.functional.one_hot(t, classes).to(y.dtype)) ** 2).sum() / y.shape[0]
    return mse


def train(twin: Twin, trainer, steps: int) -> float:
    """Train ``twin`` for ``steps`` steps on the batches ``trainer`` trains on; the accuracy
    on the trainer's held-out samples, in [0, 1]."""
    torch = _torch()
    twin.net.train()
    for step in range(steps):
        # The batch of this step as the trainer trains on it, augmented: the same pixels.
        batch_x, batch_y = trainer.training_batch(step)
        twin.optimizer.zero_grad(set_to_none=True)
        twin.loss(twin.net(torch.from_numpy(batch_x)), torch.from_numpy(batch_y)).backward()
        twin.optimizer.step()
    test = trainer.dataset.eval_index
    return accuracy(twin, trainer.dataset.x[test], trainer.dataset.y[test])


def accuracy(twin: Twin, x: np.ndarray, y: np.ndarray) -> float:
    """The trained twin's accuracy on x float32 (N, ...), y int (N,), in [0, 1]."""
    torch = _torch()
    twin.net.eval()
    with torch.no_grad():
        return float((twin.net(torch.from_numpy(np.ascontiguousarray(x))).argmax(dim=1).numpy() == y).mean())
