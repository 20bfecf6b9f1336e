"""``pi-backprop export``: the newest intact checkpoint (or the one named) as an ONNX model
to run elsewhere, or as plain npz arrays readable with numpy alone."""

import argparse

from ..export import OPSET_TEXT, check_destination, export, format_of
from ..training.inference import load_newest
from .evaluate import add_location_arguments

EXAMPLES = """\
examples:
  pi-backprop export model.onnx                           the service's newest checkpoint
  pi-backprop export --checkpoint state/demo/checkpoints cnn.onnx
  pi-backprop export --checkpoint ckpt-00004000.npz --format npz weights.npz
"""


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    add_location_arguments(parser)
    parser.add_argument("--format", choices=("onnx", "npz"),
                        help=f"onnx ({OPSET_TEXT}; needs pip install 'pi-backprop[export]') or npz "
                             "(default: from OUT's suffix, else onnx)")
    parser.add_argument("out", metavar="OUT", help="the file to write")


def run(args) -> int:
    fmt = format_of(args.out, args.format)
    loaded = load_newest(args.state_dir, args.checkpoint)
    check_destination(args.out, loaded.info.path)
    path = export(loaded, args.out, fmt)
    what = "ONNX model, input 'input', outputs 'scores' and 'confidences'" if fmt == "onnx" else \
        "npz arrays with the definition as JSON"
    print(f"wrote {path} ({path.stat().st_size} bytes): {what}; {loaded.describe()}")
    return 0
