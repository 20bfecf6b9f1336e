"""``pi-backprop evaluate``: how well the newest checkpoint classifies a data set.

Prints the checkpoint and data used, then accuracy, per-class precision/recall and the
confusion matrix as plain text. Read-only: safe while the service runs.
"""

import argparse
from pathlib import Path

from .. import paths
from ..exc import DataError
from ..storage.store import DEFAULT_FILENAME
from ..training.datasets import open_dataset
from ..training.inference import load_newest
from ..training.metrics import confusion_matrix, format_report

SPLITS = {"val": "validation split", "train": "training split", "all": "all samples"}

EXAMPLES = """\
examples:
  pi-backprop evaluate                                   the service's store, validation split
  pi-backprop evaluate --state-dir /var/lib/pi-backprop --split all
  pi-backprop evaluate --checkpoint runs/cnn --data sim:camera?n=500&seed=7 --split all
"""


def add_location_arguments(parser):
    """--state-dir and --checkpoint, shared by evaluate, predict and report."""
    parser.add_argument("--state-dir", metavar="DIR",
                        help="the service's state folder: checkpoints/ and samples.db "
                             "(default: $STATE_DIRECTORY, else ~/.local/state/pi-backprop)")
    parser.add_argument("--checkpoint", metavar="FILE_OR_DIR",
                        help="a ckpt-*.npz file, or a folder whose newest intact checkpoint is used "
                             "(default: STATE_DIR/checkpoints)")


def state_dir_of(args) -> Path:
    return Path(args.state_dir) if args.state_dir else paths.state_dir()


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    add_location_arguments(parser)
    parser.add_argument("--data", metavar="DATA",
                        help="a .npz file (arrays x, y), a sample store (.db), sim:sensor or sim:camera "
                             "(default: STATE_DIR/samples.db)")
    parser.add_argument("--split", choices=tuple(SPLITS), default="val",
                        help="which samples: the held-out validation split (default), the training "
                             "split, or all")


def run(args) -> int:
    loaded = load_newest(args.state_dir if args.state_dir else None, args.checkpoint)
    data = args.data or str(state_dir_of(args) / DEFAULT_FILENAME)
    if not args.data and not Path(data).is_file():
        raise DataError(f"no sample store at {data}: give --state-dir DIR or --data DATA")
    dataset = open_dataset(data, loaded.definition, dtype=loaded.model.dtype)
    index = {"val": dataset.eval_index, "train": dataset.train_index}.get(args.split)
    x, y = (dataset.x, dataset.y) if index is None else (dataset.x[index], dataset.y[index])
    if len(y) == 0:
        raise DataError(f"the {SPLITS[args.split]} of {dataset.source} is empty ({len(dataset)} samples, "
                        "too few to hold any out): use --split all")
    matrix = confusion_matrix(y, loaded.predict_classes(x), len(loaded.class_names))
    for path, reason in loaded.skipped:
        print(f"skipped damaged {path.name}: {reason}")
    print(loaded.describe())
    print(f"data {dataset.source}, {SPLITS[args.split]}: {len(y)} of {len(dataset)} samples")
    print()
    print(format_report(matrix, loaded.class_names))
    return 0
