"""``pi-backprop train``: train a model on a data set, resuming from checkpoints.

Re-running the same command after any stop (Ctrl-C, SIGTERM, a lost SSH session, a power
cut) continues the same run: ``--steps`` is the total, and the result is bit-identical to a
run that was never interrupted. Progress goes to stderr as a bar on a terminal, and to
stdout as one plain line per evaluation otherwise (nohup, the journal).
"""

import shlex
import signal
import sys
import threading
import time

from ..exc import ConfigError
from ..modeldef import load_definition
from ..nn.augment import Augment, table_text
from ..training.datasets import open_dataset
from ..training.trainer import Trainer

BAR_WIDTH = 24
BAR_INTERVAL = 0.2   # seconds between redraws of the terminal bar


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="model name from models/ or path to a .toml definition")
    parser.add_argument("--data", required=True,
                        help="a .npz file (arrays x, y), a sample store (.db), sim:sensor or sim:camera "
                             "(options: sim:camera?n=2000&seed=1)")
    parser.add_argument("--steps", required=True, type=int, help="total training steps of the run")
    parser.add_argument("--checkpoint-dir", required=True, help="folder for checkpoints; the run resumes from it")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 100)")
    parser.add_argument("--eval-every", type=int,
                        help="steps between evaluations and progress lines (default: --checkpoint-every)")
    parser.add_argument("--batch-size", type=int, help="samples per step (default: the model's [training], else 32)")
    parser.add_argument("--lr", type=float,
                        help="learning rate (default: the model's [training], else 0.001 adam / 0.01 sgd)")
    parser.add_argument("--optimizer", choices=("sgd", "adam", "adamw"),
                        help="default: the model's [training], else adam (adamw: Adam with decoupled weight decay)")
    parser.add_argument("--seed", type=int, help="seed of the initial weights and the data order (default 0)")
    parser.add_argument("--keep", type=int, default=3, help="checkpoints to keep (default 3)")
    augment = parser.add_mutually_exclusive_group()
    augment.add_argument("--augment", metavar="KEY=VALUE[,KEY=VALUE...]",
                         help="augment the training batches with this table instead of the model's [augment] "
                              "(e.g. shift=2,noise=0.02,hflip=true; sensor models: time_shift, gain, noise); "
                              "default: the checkpoint's, else the model's")
    augment.add_argument("--no-augment", action="store_true", help="train on the samples as they are")


def parse_augment(text: str) -> dict:
    """``"shift=2,noise=0.02,hflip=true"`` -> ``{"shift": 2, "noise": 0.02, "hflip": True}``;
    ``ConfigError`` (one line) for text that is not KEY=VALUE pairs of numbers or true/false.
    The keys and ranges are checked against the model by ``Augment.from_table``."""
    table = {}
    for item in text.split(","):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not key or not equals or not value:
            raise ConfigError(f"--augment: expected KEY=VALUE[,KEY=VALUE...] (e.g. shift=2,noise=0.02), got {text!r}")
        if key in table:
            raise ConfigError(f"--augment: {key} is given twice")
        table[key] = _augment_value(key, value)
    return table


def _augment_value(key: str, value: str) -> bool | int | float:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ConfigError(f"--augment: {key}={value}: expected a number or true/false")


def augment_text(table: dict) -> str:
    """``"augment shift=2 noise=0.02"``, or ``"no augmentation"`` for an empty table."""
    return f"augment {table_text(table)}" if table else "no augmentation"


def augment_option(args, definition) -> dict | None:
    """The table ``--augment``/``--no-augment`` ask for, checked against ``definition``'s
    input (``ConfigError`` naming the key), or None when neither was given."""
    if args.no_augment:
        return {}
    if args.augment is None:
        return None
    try:
        return Augment.from_table(parse_augment(args.augment), definition.input_shape).to_table()
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith("--augment") else f"--augment: {message}") from None


def resume_command(args) -> str:
    """The command that continues this run (the same options as given)."""
    words = ["pi-backprop"]
    if getattr(args, "backend", None):
        words += ["--backend", args.backend]
    words += ["train", "--model", args.model, "--data", args.data, "--steps", str(args.steps),
              "--checkpoint-dir", args.checkpoint_dir]
    for option in ("checkpoint_every", "eval_every", "batch_size", "lr", "optimizer", "seed"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option.replace('_', '-')}", str(value)]
    if args.keep != 3:
        words += ["--keep", str(args.keep)]
    if args.no_augment:
        words.append("--no-augment")
    elif args.augment is not None:
        words += ["--augment", args.augment]
    return shlex.join(words)


class StopOnSignal:
    """SIGINT, SIGTERM and SIGHUP (a lost SSH session) set ``event``: the run then ends after
    the current step with a checkpoint, and the same command resumes it. A second Ctrl-C
    raises KeyboardInterrupt. A SIGHUP that was ignored (``nohup``) stays ignored. Restores
    the old handlers on exit."""

    def __init__(self, event: threading.Event):
        self.event = event
        self.signal_name = None
        self._previous = {}

    def _handle(self, number, frame):
        if self.event.is_set() and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name
        self.event.set()

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if number == signal.SIGHUP and signal.getsignal(number) == signal.SIG_IGN:
                continue
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def _duration(seconds) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


class Progress:
    """A hook that shows progress: a redrawn bar on a terminal, else one line per evaluation.

    If the reader goes away (``train ... | head -1``: a broken pipe), it sets ``stop_event``:
    the run ends after the current step with a checkpoint, as for a signal."""

    def __init__(self, total_steps, first_step, stream=None, is_tty=None, out=None, stop_event=None):
        self.stop_event = stop_event
        self.reader_gone = False
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout
        self.is_tty = self.stream.isatty() if is_tty is None else is_tty
        self.total = total_steps
        self.accuracy = None
        self.mark_step, self.mark_time = first_step, time.monotonic()
        self.rate = None
        self.last_draw = 0.0
        self.drawn = False

    def _rate(self, step, now):
        if step > self.mark_step and now > self.mark_time:
            self.rate = (step - self.mark_step) / (now - self.mark_time)
        return self.rate

    def _eta(self, step):
        return "-" if not self.rate else _duration((self.total - step) / self.rate)

    def __call__(self, report):
        if self.reader_gone:
            return
        try:
            self._show(report)
        except BrokenPipeError:
            self.reader_gone = True
            if self.stop_event is not None:
                self.stop_event.set()

    def _show(self, report):
        now = time.monotonic()
        if report.metrics is not None:
            self.accuracy = report.metrics.get("eval_accuracy")
        if self.is_tty:
            if now - self.last_draw < BAR_INTERVAL and report.step != self.total:
                return
            self.last_draw = now
            rate = self._rate(report.step, now)
            filled = int(BAR_WIDTH * report.step / self.total) if self.total else BAR_WIDTH
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            speed = f"{rate:.1f} steps/s" if rate else "- steps/s"
            self.stream.write(f"\rstep {report.step}/{self.total} [{bar}] loss {report.loss:.4f} "
                              f"acc {_percent(self.accuracy)} {speed} ETA {self._eta(report.step)}\033[K")
            self.stream.flush()
            self.drawn = True
        elif report.metrics is not None:
            rate = self._rate(report.step, now)
            self.mark_step, self.mark_time = report.step, now
            loss = report.metrics.get("train_loss", report.loss)
            speed = f"{rate:.1f} steps/s" if rate else "- steps/s"
            self.out.write(f"step {report.step}/{self.total}  loss {loss:.4f}  acc {_percent(self.accuracy)}  "
                           f"{speed}  ETA {self._eta(report.step)}\n")
            self.out.flush()

    def finish(self):
        if self.drawn and not self.reader_gone:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def run(args) -> int:
    if args.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {args.steps}")
    stop = threading.Event()
    with StopOnSignal(stop) as signals:
        definition = load_definition(args.model)
        augment = augment_option(args, definition)   # before the data are read
        dataset = open_dataset(args.data, definition)
        with Trainer(definition, dataset, args.checkpoint_dir, optimizer=args.optimizer, lr=args.lr,
                     batch_size=args.batch_size, seed=args.seed, augment=augment,
                     checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, keep=args.keep,
                     stop_event=stop) as trainer:
            return _train(trainer, args, signals)


def _train(trainer, args, signals) -> int:
    out = sys.stdout
    s = trainer.settings
    if trainer.resumed_from is not None:
        print(f"resuming from {trainer.resumed_from.path} (step {trainer.step})", file=out)
    if trainer.step >= args.steps:
        print(f"already at step {trainer.step} of {args.steps} in {args.checkpoint_dir}: nothing to do", file=out)
        return 0
    data = trainer.dataset
    print(f"training {trainer.definition.name} ({trainer.model.num_parameters:,} parameters) on {data.source} "
          f"({len(data.train_index)} samples, {len(data.eval_index)} held out): {s['optimizer']} "
          f"lr {trainer.optimizer.lr:g}, batch {s['batch_size']}, seed {s['seed']}, "
          f"{augment_text(trainer.augment.to_table())}; steps {trainer.step} -> "
          f"{args.steps}, checkpoint every {trainer.checkpoint_every}", file=out, flush=True)
    progress = Progress(args.steps, trainer.step, out=out, stop_event=trainer.stop_event)
    trainer.hooks.append(progress)
    try:
        result = trainer.run(args.steps)
    finally:
        progress.finish()
    where = f"checkpoint {result.checkpoint}" if result.checkpoint else "no new checkpoint (nothing to save)"
    if result.stopped:
        cause = signals.signal_name or ("the reader of the output leaving" if progress.reader_gone
                                        else "stop requested")
        print(f"stopped by {cause} at step {result.step} of {result.total_steps}; {where}", file=out)
        print(f"to resume: {resume_command(args)}", file=out, flush=True)
        return 0
    accuracy = result.metrics.get("eval_accuracy")
    print(f"done: step {result.step} of {result.total_steps}, loss {_loss(result.metrics.get('train_loss'))}, "
          f"held-out accuracy {_percent(accuracy)}; {where}", file=out, flush=True)
    return 0


def _loss(value) -> str:
    return "-" if value is None else f"{value:.4f}"
