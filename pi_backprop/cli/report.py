"""``pi-backprop report``: PNG pictures of what was learned, from the state directory.

    learning_curves.png   loss and accuracy against step, training and validation
                          (the store's metrics history)
    confusion_matrix.png  the newest checkpoint on the store's validation split
    samples.png           the newest samples of each class as the model sees them, to check
                          camera framing and labels
    augmented_samples.png a few stored samples and augmented versions of each, as the model is
                          trained on them: the newest checkpoint's [augment] table (--model:
                          a definition's, --augment: a table to try)

A picture whose inputs do not exist yet (no history, no checkpoint) is skipped with a note,
so the sample grid can be checked before any training. Needs matplotlib (the ``plot``
extra); read-only on the state, safe while the service runs.
"""

import argparse
from pathlib import Path

import numpy as np

from ..exc import CheckpointError, ConfigError, DataError
from ..modeldef import load_definition
from ..nn.augment import Augment
from ..storage.store import DEFAULT_FILENAME, SampleStore
from ..training.inference import load_newest
from ..training.metrics import accuracy, confusion_matrix
from . import plots
from .evaluate import state_dir_of
from .train import augment_text, parse_augment

FILES = {"curves": "learning_curves.png", "confusion": "confusion_matrix.png", "samples": "samples.png",
         "augmented": "augmented_samples.png"}
AUGMENTED_SAMPLES = 4    # rows of augmented_samples.png, newest first, one class after another
AUGMENTED_VERSIONS = 5   # augmented versions beside each stored sample

EXAMPLES = """\
examples:
  pi-backprop report                                   pictures in ~/.local/state/pi-backprop/report
  pi-backprop report --state-dir /var/lib/pi-backprop --out ~/report
  pi-backprop report --augment shift=3,brightness=0.2  try an [augment] table on the stored samples
"""


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("--state-dir", metavar="DIR",
                        help="the service's state folder: checkpoints/ and samples.db "
                             "(default: $STATE_DIRECTORY, else ~/.local/state/pi-backprop)")
    parser.add_argument("--out", metavar="DIR", help="folder for the PNG files (default: STATE_DIR/report)")
    parser.add_argument("--per-class", type=int, default=8, metavar="K",
                        help="newest samples shown per class (default 8)")
    parser.add_argument("--model", metavar="NAME",
                        help="show this model definition's [augment] table in augmented_samples.png "
                             "(default: the newest checkpoint's)")
    parser.add_argument("--augment", metavar="KEY=VALUE[,KEY=VALUE...]",
                        help="show this [augment] table instead, to see what it does before training "
                             "with it (e.g. shift=2,noise=0.02)")


def run(args) -> int:
    if not 1 <= args.per_class <= 50:
        raise ConfigError(f"--per-class must be between 1 and 50, got {args.per_class}")
    state_dir = state_dir_of(args)
    store_path = state_dir / DEFAULT_FILENAME
    if not store_path.is_file():
        raise DataError(f"no sample store at {store_path}: give the service's --state-dir "
                        "(e.g. /var/lib/pi-backprop)")
    _require_matplotlib()  # before any work is done
    asked = parse_augment(args.augment) if args.augment is not None else None
    definition = load_definition(args.model) if args.model else None
    out = Path(args.out) if args.out else state_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {out}: {error.strerror or error}; give another --out") from None
    try:
        loaded = load_newest(state_dir)
    except CheckpointError as error:
        loaded, no_model = None, str(error)
    written, notes = [], []
    with SampleStore(store_path, readonly=True) as store:
        names = store.class_names
        if not names:
            raise DataError(f"{store_path} holds no classes yet: let the service collect samples first")
        title = f"{loaded.definition.name}, step {loaded.info.step}" if loaded else str(state_dir)
        # First, since a table that does not fit the samples is the user's mistake (exit 2).
        augmentation = _augmentation(asked, definition, loaded, store.sample_shape)

        history = _history(store.metrics())
        if history is None:
            notes.append("no training history in the store yet: learning curves skipped")
        else:
            path = out / FILES["curves"]
            plots.learning_curves(history, path, title=f"learning curves: {title}")
            written.append(path)

        if loaded is None:
            notes.append(f"confusion matrix skipped: {no_model}")
        elif tuple(loaded.class_names) != tuple(names):
            notes.append(f"confusion matrix skipped: the checkpoint's classes {list(loaded.class_names)} "
                         f"differ from the store's {list(names)}")
        else:
            x, y = store.load_arrays("val")
            if len(y) == 0:
                notes.append("confusion matrix skipped: the validation split holds no samples yet")
            elif x.shape[1:] != tuple(loaded.definition.input_shape):
                notes.append(f"confusion matrix skipped: the store holds samples of shape {x.shape[1:]}, "
                             f"the model takes {tuple(loaded.definition.input_shape)}")
            else:
                matrix = confusion_matrix(y, loaded.predict_classes(x), len(names))
                path = out / FILES["confusion"]
                plots.confusion_picture(matrix, names, path,
                                        title=f"validation: {len(y)} samples, accuracy "
                                              f"{100 * accuracy(matrix):.1f}%\n{title}")
                written.append(path)

        counts = store.class_counts("all")
        if counts.sum() == 0:
            notes.append("no labelled samples yet: sample grid skipped")
        else:
            newest = [store.newest(label, args.per_class) for label in range(len(names))]
            # The count under each name shows at a glance a class that is short of samples.
            labels = [f"{name}\n({int(counts[i])})" for i, name in enumerate(names)]
            path = out / FILES["samples"]
            plots.sample_grid(newest, labels, path,
                              title=f"newest {args.per_class} samples per class, as the model sees them")
            written.append(path)

        augment, seed, where = augmentation
        if counts.sum() == 0:
            notes.append("no labelled samples yet: augmented samples skipped")
        elif augment is None:
            notes.append(f"augmented samples skipped: {where}")
        elif not augment:
            notes.append(f"augmented samples skipped: no augmentation in use ({where} has none)")
        else:
            x, rows = _some_samples(store, names)
            # Each version is what step s of the run draws for batch position i (a pure
            # function of seed and step): the changes the model really sees.
            versions = np.stack([augment.apply(x, seed, step) for step in range(AUGMENTED_VERSIONS)], axis=1)
            path = out / FILES["augmented"]
            plots.augmented_samples(x, versions, rows, path,
                                    title=f"{augment_text(augment.to_table())} (from {where}), training only")
            written.append(path)
    for note in notes:
        print(note)
    for path in written:
        print(f"wrote {path}")
    if not written:
        raise DataError(f"nothing to draw yet in {state_dir}: run the service to collect and train first")
    return 0


def _augmentation(asked, definition, loaded, sample_shape):
    """(Augment or None, seed, where it comes from, or why there is none) for the picture:
    ``--augment``'s table, else ``--model``'s, else the newest checkpoint's."""
    if sample_shape is None:
        return None, 0, "the store holds no samples yet"
    if asked is not None:
        try:
            augment = Augment.from_table(asked, sample_shape)
        except ConfigError as error:
            raise ConfigError(f"--augment: {error}") from None
        return augment, 0, "--augment"
    if definition is None and loaded is None:
        return None, 0, ("no checkpoint yet to read the augmentation in use from; give --model NAME "
                         "(its [augment] table) or --augment KEY=VALUE,...")
    if definition is not None:
        table, seed, where, shape = (definition.augment, int(definition.training.get("seed", 0)),
                                     f"model {definition.name}", definition.input_shape)
    else:
        training = loaded.info.header.get("training", {})
        table = training.get("augment", loaded.definition.augment)   # older checkpoints: the definition's
        seed, where, shape = int(training.get("seed", 0)), loaded.info.path.name, loaded.definition.input_shape
    if tuple(shape) != tuple(sample_shape):
        return None, 0, f"{where} takes inputs of shape {tuple(shape)}, the store holds {tuple(sample_shape)}"
    try:
        return Augment.from_table(table, sample_shape), seed, where
    except ConfigError as error:   # a checkpoint written by a later version
        return None, 0, f"{where}: {error}"


def _some_samples(store, names):
    """(x float32 (k, *sample_shape), row names): the newest sample of each class, then the
    next newest, up to ``AUGMENTED_SAMPLES``."""
    newest = [store.newest(label, AUGMENTED_SAMPLES)[::-1] for label in range(len(names))]
    picked = [(names[label], samples[depth]) for depth in range(AUGMENTED_SAMPLES)
              for label, samples in enumerate(newest) if depth < len(samples)][:AUGMENTED_SAMPLES]
    return np.stack([x for _, x in picked]), [name for name, _ in picked]


def _require_matplotlib():
    """Fail before any work, with the install hint, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(plots.INSTALL_HINT) from None


def _history(metrics):
    """The store's metric rows as ``plots.learning_curves`` wants them (NaN for a missing
    value), or None when there are none."""
    if not metrics:
        return None
    columns = {"step": [m.step for m in metrics]}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        columns[key] = [np.nan if getattr(m, key) is None else getattr(m, key) for m in metrics]
    return {key: np.asarray(values, dtype=float) for key, values in columns.items()}
