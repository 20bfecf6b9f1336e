"""``pi-backprop checkpoint list DIR`` and ``pi-backprop checkpoint show FILE``.

Both verify every file (SHA-256 over the content) and say "OK" or why not. Exit status:
0 when every file shown is intact, 1 when one is damaged or refused, 2 for a usage error.
Read-only: nothing is removed or repaired.
"""

from pathlib import Path

from ..exc import CheckpointError, ConfigError
from ..storage import checkpoint as ckpt


def add_arguments(parser):
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=type(parser))
    listing = actions.add_parser("list", help="every checkpoint in a folder, newest first")
    listing.add_argument("directory", help="checkpoint folder (--checkpoint-dir of a run)")
    show = actions.add_parser("show", help="everything about one checkpoint file")
    show.add_argument("file", help="a ckpt-*.npz file")


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value):
    return "-" if value is None else f"{value:.4f}"


def _written(header):
    return str(header.get("written_at", "?")).replace("T", " ")[:19]


def run(args) -> int:
    return _list(Path(args.directory)) if args.action == "list" else _show(Path(args.file))


def _list(directory) -> int:
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a folder")
    files = ckpt.checkpoint_files(directory)
    temps = ckpt.temp_files(directory)
    if not files:
        print(f"{directory}: no checkpoints")
    else:
        print(f"{'file':<22} {'step':>9}  {'model':<14} {'written (UTC)':<19}  {'loss':>7} {'accuracy':>8}  integrity")
    status = 0
    for path in files:
        try:
            info = ckpt.verify_checkpoint(path)
        except CheckpointError as error:
            status = 1
            print(f"{path.name:<22} {ckpt.step_of(path):>9}  {'?':<14} {'?':<19}  {'':>7} {'':>8}  "
                  f"{_why(error, path)}")
            continue
        metrics = info.header.get("metrics", {})
        print(f"{path.name:<22} {info.step:>9}  {info.model_name:<14} {_written(info.header):<19}  "
              f"{_number(metrics.get('train_loss')):>7} {_percent(metrics.get('eval_accuracy')):>8}  OK")
    for path in temps:
        print(f"{path.name}: an unfinished write (removed by the next training run)")
    return status


def _why(error, path):
    kind = "REFUSED" if isinstance(error, ckpt.CheckpointRefused) else "DAMAGED"
    return f"{kind}: {str(error).removeprefix(f'{path}: ')}"


def _show(path) -> int:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder: pi-backprop checkpoint list {path} shows its checkpoints")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        info = ckpt.verify_checkpoint(path)
    except CheckpointError as error:
        print(f"{path}")
        print(f"  integrity    {_why(error, path)}")
        return 1
    h = info.header
    model = h.get("model", {})
    optimizer = h.get("optimizer", {})
    hyper = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in optimizer.get("hyper", {}).items())
    print(f"{path}")
    print(f"  step         {info.step}")
    print(f"  model        {model.get('name')}: input {tuple(model.get('input_shape', ()))}, "
          f"{len(model.get('classes', ()))} classes, {h.get('dtype')}")
    print(f"  optimizer    {optimizer.get('kind')} ({hyper}), {optimizer.get('step')} updates")
    training = h.get("training", {})
    if training:
        print("  training     " + ", ".join(f"{k} {training[k]}" for k in ("seed", "batch_size", "checkpoint_every",
                                                                          "eval_every") if k in training))
    data = h.get("data", {})
    if data:
        print(f"  data         {data.get('source')}: {data.get('samples')} samples ({data.get('held_out')} held "
              f"out), epoch {data.get('epoch')}, batch {data.get('batch_in_epoch')} of the epoch")
    metrics = h.get("metrics", {})
    if metrics:
        print(f"  metrics      train loss {_number(metrics.get('train_loss'))}, held-out loss "
              f"{_number(metrics.get('eval_loss'))}, accuracy {_percent(metrics.get('eval_accuracy'))} "
              f"(at step {metrics.get('eval_step', '-')})")
    print(f"  written      {_written(h)} UTC by pi-backprop {h.get('library_version')} "
          f"(numpy {h.get('numpy_version')}), format {h.get('format_version')}")
    print("  arrays       " + ", ".join(f"{name} {tuple(a['shape'])}" for name, a in sorted(h["arrays"].items())))
    print(f"  sha256       {h['sha256']}")
    print("  integrity    OK")
    return 0
