"""``pi-backprop data stats|export|import|clear|check``: look after the sample store.

Safe while the service runs: ``stats``, ``export`` and ``check`` open the store read-only,
``import`` and ``clear`` wait for the service's write to finish (SQLite locking) and keep the
bounds the service saved in the store. ``check --repair`` refuses while the service has the
store open (the service repairs a damaged store itself when it starts).
"""

import argparse
import datetime
from pathlib import Path

from .. import paths
from ..budget import size_text
from ..exc import DataError
from ..storage import salvage
from ..storage.store import DEFAULT_FILENAME, SampleStore, read_npz

EXAMPLES = """\
examples:
  pi-backprop data stats
  pi-backprop data export samples.npz --split val
  pi-backprop data import samples.npz
  pi-backprop data clear --yes
  pi-backprop data check --repair
  sudo -u pi-backprop pi-backprop data stats --state-dir /var/lib/pi-backprop
"""

ACTIONS = {
    "stats": ("samples per class and split, sizes, bounds and the last training metrics",
              "pi-backprop data stats --db /var/lib/pi-backprop/samples.db"),
    "export": ("write samples to an .npz (x float32, y int64, class_names) that train --data reads",
               "pi-backprop data export samples.npz --split train"),
    "import": ("add the samples of an .npz; shape and class names must match the store",
               "pi-backprop data import samples.npz"),
    "clear": ("delete every sample and metric (asks for --yes; export first to keep them)",
              "pi-backprop data clear --yes"),
    "check": ("SQLite's integrity check of the store; --repair moves a damaged one aside and saves "
              "every readable sample into a fresh one", "pi-backprop data check --repair"),
}
DAMAGED = 1   # the exit status of ``check`` that finds damage (and is not asked to repair it)


def _add_location(parser, default):
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", metavar="PATH", default=default,
                       help="the sample store file (default: samples.db in the state directory)")
    where.add_argument("--state-dir", metavar="DIR", default=default,
                       help="use DIR/samples.db (the service's is /var/lib/pi-backprop)")


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    _add_location(parser, None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (help_text, example) in ACTIONS.items():
        action = actions.add_parser(name, help=help_text, description=help_text,
                                    epilog=f"example:\n  {example}",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        # Also accepted after the action; SUPPRESS keeps a value given before it.
        _add_location(action, argparse.SUPPRESS)
        if name == "export":
            action.add_argument("file", help="the .npz file to write (replaced atomically)")
            action.add_argument("--split", choices=("all", "train", "val"), default="all",
                                help="which samples (default: all)")
            action.add_argument("--unlabelled", action="store_true",
                                help="also export unlabelled samples, with label -1")
        elif name == "import":
            action.add_argument("file", help="an .npz with arrays x, y and class_names")
            action.add_argument("--source", help="source recorded for each sample (default: import:FILE)")
        elif name == "clear":
            action.add_argument("--yes", action="store_true", help="really delete (required)")
            action.add_argument("--classes", action="store_true",
                                help="also forget the class names (to collect for a different model)")
        elif name == "check":
            action.add_argument("--repair", action="store_true",
                                help="if damaged: move the file aside as samples.db.corrupt-<UTC time> and save "
                                     "what can be read into a fresh store")
            action.add_argument("--model", metavar="MODEL",
                                help="the model whose class names to use if the store's own are unreadable")
            action.add_argument("--force", action="store_true",
                                help="repair also a file whose first page is garbage (it may be no store at all)")


def store_path(args) -> Path:
    """The store file named by --db or --state-dir, else the default."""
    if getattr(args, "db", None):
        return Path(args.db)
    if getattr(args, "state_dir", None):
        return Path(args.state_dir) / DEFAULT_FILENAME
    return paths.state_dir() / DEFAULT_FILENAME


def run(args) -> int:
    path = store_path(args)
    if args.action == "stats":
        with SampleStore(path, readonly=True) as store:
            print_stats(store.stats())
        problems = salvage.check(path, quick=True)
        print("  integrity   " + (f"damaged ({problems[0]}): pi-backprop data check --repair --db {path}"
                                  if problems else "ok (quick check)"))
        return DAMAGED if problems else 0
    elif args.action == "check":
        return check(path, repair=args.repair, model=args.model, force=args.force)
    elif args.action == "export":
        with SampleStore(path, readonly=True) as store:
            count = store.export_npz(args.file, split=args.split, unlabelled=args.unlabelled)
        print(f"wrote {count} samples ({args.split}) from {path} to {args.file}")
    elif args.action == "import":
        x, y, names = read_npz(args.file)   # a bad file is refused before any store is made
        if not path.exists():
            print(f"creating sample store {path}")
        with SampleStore(path) as store:
            before = len(store)
            count = store.import_arrays(x, y, names, path=args.file, source=args.source)
            after = len(store)
        dropped = before + count - after
        print(f"imported {count} samples from {args.file} into {path}: {after} stored"
              + (f" ({dropped} oldest dropped by the store's bounds)" if dropped else ""))
    elif args.action == "clear":
        if not path.exists():
            raise DataError(f"no sample store at {path}: nothing to clear")
        with SampleStore(path) as store:
            count = len(store)
            if not args.yes:
                raise DataError(f"this would delete {count} samples and the training history in {path}; "
                                "add --yes to do it (pi-backprop data export FILE.npz keeps a copy)")
            store.clear(classes=args.classes)
        print(f"deleted {count} samples{' and the class names' if args.classes else ''} from {path}")
    return 0


def check(path: Path, *, repair: bool, model: str | None = None, force: bool = False) -> int:
    """``data check [--repair]``: 0 if intact (or repaired), ``DAMAGED`` if damaged."""
    names = None
    if model is not None:
        from ..modeldef import load_definition
        names = tuple(load_definition(model).classes)
    problems = salvage.check(path)
    if not problems:
        print(f"sample store {path} is intact (SQLite's integrity check passed)")
        return 0
    if not repair:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        print(f"sample store {path} is damaged: {problems[0]}{more}; pi-backprop data check --repair --db {path} "
              "moves it aside and saves every readable sample into a fresh store")
        return DAMAGED
    print(salvage.salvage(path, class_names=names, force=force).text())
    return 0


def print_stats(stats) -> None:
    print(f"sample store {stats.path}")
    print(f"  file        {size_text(stats.file_bytes)} on disk, {size_text(stats.data_bytes)} of samples "
          f"(bound {size_text(stats.max_bytes)})")
    if stats.sample_shape is None:
        print("  samples     none yet")
    else:
        shape = "x".join(str(n) for n in stats.sample_shape)
        print(f"  samples     {stats.labelled + stats.unlabelled}, each {shape} {stats.sample_dtype}; "
              f"bound {stats.max_per_class} per class, {stats.validation_fraction:.0%} held out")
    if stats.class_names:
        width = max(len(name) for name in stats.class_names)
        print(f"  {'class':<{width}}  {'train':>6} {'val':>6}")
        for name, (train, val) in stats.per_class.items():
            print(f"  {name:<{width}}  {train:>6} {val:>6}")
    else:
        print("  classes     not set yet")
    if stats.unlabelled:
        print(f"  unlabelled  {stats.unlabelled}")
    metric = stats.last_metric
    if metric is None:
        print("  training    no metrics recorded")
    else:
        when = datetime.datetime.fromtimestamp(metric.time).strftime("%Y-%m-%d %H:%M:%S")
        parts = [f"step {metric.step}"]
        for label, value, fmt in (("loss", metric.loss, ".4f"), ("accuracy", metric.accuracy, ".1%"),
                                  ("val loss", metric.val_loss, ".4f"),
                                  ("val accuracy", metric.val_accuracy, ".1%"), ("lr", metric.lr, ".3g")):
            if value is not None:
                parts.append(f"{label} {value:{fmt}}")
        print(f"  training    {', '.join(parts)} at {when}")

