"""The ``pi-backprop`` command: one subcommand per module of this package.

Each subcommand module has ``add_arguments(parser)`` and ``run(args) -> exit status``.
A ``PiBackpropError`` (a user's mistake, missing hardware) prints as one line and exits 2;
anything else is a bug and keeps its traceback.
"""

import argparse
import importlib
import os
import signal
import sys

from ..exc import PiBackpropError

USAGE_ERROR = 2

# (subcommand, module, one-line help); a module not present is left out of the menu.
COMMANDS = [
    ("run", "run", "run the service loop: capture, store, train, checkpoint, predict"),
    ("train", "train", "train a model on a data set, resuming from checkpoints"),
    ("evaluate", "evaluate", "accuracy, per-class precision/recall and confusion matrix"),
    ("predict", "predict", "classify an image file, a .npy array or a fresh camera capture"),
    ("checkpoint", "checkpoint", "list checkpoints or show one, with an integrity check"),
    ("data", "data", "sample store: stats, export, import, clear, check"),
    ("export", "export", "a checkpoint as an ONNX model (to run elsewhere) or plain npz arrays"),
    ("report", "report", "write PNG learning curves, confusion matrix and sample grids"),
    ("gradcheck", "gradcheck", "compare backprop with finite differences for a model"),
    ("bench", "bench", "benchmark training steps against the numpy backend and PyTorch"),
    ("warmup", "warmup", "compile and cache the numba kernels (run once after install)"),
    ("web", "web", "the web page's address and token (web token [--rotate])"),
    ("mqtt", "mqtt", "MQTT: where it publishes (mqtt status), remove it from Home Assistant (mqtt forget)"),
    ("info", "info", "what was found: Pi model, camera, pins, numba, backend, the web page"),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse's own usage errors, in the same one-line form as ours.
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="pi-backprop", description="Train small neural networks on a Raspberry Pi.")
    parser.add_argument("--version", action="version", version=f"pi-backprop {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--backend", choices=("numba", "numpy"),
                        help="kernel backend (default: $PI_BACKPROP_BACKEND, else numba if installed)")
    parser.add_argument("--memory-budget", type=int, metavar="MB",
                        help="refuse a model, data file or image that would need more memory than this "
                             "(default: service.memory_budget_mb for run, else $PI_BACKPROP_MEMORY_MB, else 256)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name, help_text in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"{__name__}.{module_name}":
                continue
            raise
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``pi-backprop`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return USAGE_ERROR
    from ..logs import setup_logging

    setup_logging(verbose=args.verbose)
    try:
        if args.backend:
            from ..nn import set_backend
            set_backend(args.backend)
        if args.memory_budget is not None:
            from .. import budget
            budget.set_limit(args.memory_budget, from_command_line=True)
        status = int(args.handler(args) or 0)
        # Output into a pipe is block-buffered: flushed here, a closed pipe lands in the
        # BrokenPipeError branch below, not in an "Exception ignored" at interpreter exit.
        sys.stdout.flush()
        return status
    except PiBackpropError as error:
        print(f"pi-backprop {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"pi-backprop {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `pi-backprop checkpoint list | head`: the reader left; stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
