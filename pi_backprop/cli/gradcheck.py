"""``pi-backprop gradcheck MODEL``: backprop against central differences, in float64."""

import numpy as np

from ..exc import ConfigError
from ..modeldef import load_definition
from ..nn import gradcheck

TOLERANCE = 1e-6


def add_arguments(parser):
    parser.add_argument("model", help="model name from models/ or path to a .toml definition")
    parser.add_argument("--batch-size", type=int, default=2, help="samples in the check batch (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs (default 0)")
    parser.add_argument("--eps", type=float, default=1e-6, help="finite-difference step (default 1e-6)")


def run(args) -> int:
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 < args.eps < 1:
        raise ConfigError(f"--eps must lie between 0 and 1, got {args.eps:g}")
    definition = load_definition(args.model)
    model = definition.build(seed=args.seed, dtype=np.float64)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch_size,) + definition.input_shape)
    t = rng.integers(0, len(definition.classes), size=args.batch_size)
    errors = gradcheck(model, definition.make_loss(), x, t, eps=args.eps)
    print(f"gradcheck {definition.name}: {model.num_parameters:,} parameters, batch {args.batch_size}, "
          f"eps {args.eps:g}, float64")
    worst = 0.0
    for name, error in errors.items():
        worst = max(worst, error)
        print(f"  {name:<8} max relative error {error:.2e}  {'ok' if error < TOLERANCE else 'FAIL'}")
    print(f"{'PASS' if worst < TOLERANCE else 'FAIL'}: worst {worst:.2e} (tolerance {TOLERANCE:g})")
    return 0 if worst < TOLERANCE else 1
