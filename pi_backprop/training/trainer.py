"""The trainer: steps, evaluation and checkpoints for one model on one data set.

    with Trainer(definition, dataset, checkpoint_dir="ckpt", hooks=[print]) as trainer:
        result = trainer.run(total_steps=2000)      # resumes from the newest valid checkpoint

Data order is a pure function of (seed, step): the batch of step ``s`` is slice
``s mod E`` of a permutation of the training samples drawn from
``numpy.random.default_rng([seed, s // E])`` (``E`` batches per epoch). Together with the
parameters and optimizer state in a checkpoint, that makes a resumed run bit-identical to an
uninterrupted one. ``stop_event`` is checked between steps; stopping writes a checkpoint.
"""

import dataclasses
import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ..exc import CheckpointDirBusy, CheckpointError, CheckpointWriteError, ConfigError, DivergenceError
from ..nn.augment import Augment
from ..nn.optim import OPTIMIZERS
from ..storage import checkpoint as ckpt

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

    from ..modeldef import ModelDefinition
    from ..nn.optim import Optimizer
    from .datasets import Dataset

RNG_SCHEME = "pcg64-epoch-permutation-v1"
DEFAULTS = {"optimizer": "adam", "batch_size": 32, "seed": 0, "momentum": 0.0, "weight_decay": 0.0}
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.01}
ADAMW_DECAY = 0.01   # AdamW's weight_decay when none is given (PyTorch's default)
DEFAULT_CHECKPOINT_EVERY = 100
EVAL_BATCH = 256
# Settings that decide which numbers a run computes: changing one mid-run breaks "same run".
RUN_IDENTITY = ("seed", "batch_size", "optimizer")
# Settings that may change mid-run (the service lowers lr after a divergence): honoured, warned.
ADJUSTABLE = ("lr", "momentum", "weight_decay")

_log = logging.getLogger(__name__)


_UNCHANGED: Any = object()  # reconfigure(): a keyword left out (Any: it stands in for any value)


@dataclasses.dataclass(frozen=True)
class StepReport:
    """What a hook receives after every step.

    step     : steps done so far (1-based count, after this step)
    loss     : training loss of this step's batch (float)
    metrics  : ``{"eval_loss", "eval_accuracy", "train_loss"}`` when evaluated at this step, else None
    checkpoint : Path written at this step, else None
    elapsed  : seconds since ``run()`` began; ``steps_this_run`` steps done in that time
    """

    step: int
    total_steps: int
    loss: float
    metrics: dict | None
    checkpoint: Path | None
    elapsed: float
    steps_this_run: int


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How ``run()`` ended: at ``step`` of ``total_steps``; ``stopped`` if the stop event ended it."""

    step: int
    total_steps: int
    stopped: bool
    checkpoint: Path | None   # the last checkpoint written (this run), if any
    metrics: dict


class Trainer:
    """Trains ``definition``'s model on ``dataset``, checkpointing into ``checkpoint_dir``.

    definition     : ``ModelDefinition``
    dataset        : ``datasets.Dataset`` for that definition (may be replaced between runs
                     through ``trainer.dataset = ...``; the order then follows the new data),
                     or None until there are data (the service: resume first, collect, then
                     train); ``run()`` and ``evaluate()`` need one
    checkpoint_dir : folder for ``ckpt-*.npz`` or None (no checkpoints, no resume). The
                     trainer holds an exclusive lock on ``DIR/.lock`` until ``close()``.
    optimizer, lr, batch_size, seed, momentum, weight_decay : None takes, in order, the
                     resumed checkpoint's value, the definition's ``[training]`` table, the
                     defaults. An explicit seed/batch_size/optimizer differing from the
                     checkpoint's is refused (``ConfigError``); an explicit lr/momentum/
                     weight_decay differing from it is honoured with a warning.
    augment        : an ``[augment]`` table (``nn.augment``) for the training batches; None
                     takes the resumed checkpoint's, else the definition's; {} turns it off.
                     One differing from the checkpoint's is honoured with a warning.
    checkpoint_every : steps between checkpoints (default 100); eval_every: steps between
                     evaluations on the held-out split (default: the same)
    keep           : checkpoints kept (default 3)
    max_grad_norm  : raise ``DivergenceError`` when the gradient's L2 norm exceeds it (None: off)
    hooks          : callables ``hook(StepReport)`` called after every step
    stop_event     : ``threading.Event``; set it (from a signal handler or another thread)
                     to end ``run()`` after the current step with a checkpoint
    The newest intact checkpoint in ``checkpoint_dir`` is always resumed from; for a fresh
    start use a new directory (older checkpoints are never overwritten by another run).
    """

    def __init__(self, definition: "ModelDefinition", dataset: "Dataset | None",
                 checkpoint_dir: Path | str | None = None, *, optimizer: str | None = None, lr: float | None = None,
                 batch_size: int | None = None, seed: int | None = None, momentum: float | None = None,
                 weight_decay: float | None = None, augment: dict | None = None, checkpoint_every: int | None = None,
                 eval_every: int | None = None, keep: int = ckpt.DEFAULT_KEEP,
                 max_grad_norm: float | None = None, hooks: Iterable[Callable[[StepReport], object]] = (),
                 stop_event: threading.Event | None = None, dtype: "DTypeLike" = np.float32):
        self.definition = definition
        self.dataset = dataset
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.hooks = list(hooks)
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.keep = _positive_int(keep, "keep")
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.resumed_from = None
        self.skipped = []            # [(path, reason)] damaged checkpoints passed over on resume
        self.warnings = []           # one-line notes about settings changed since the checkpoint
        self.last_checkpoint = None
        self._lock_fd = None
        self._perm_cache = (None, None)
        self.loss = definition.make_loss()
        self._eval_loss = definition.make_loss()
        explicit = {"optimizer": optimizer, "lr": lr, "batch_size": batch_size, "seed": seed,
                    "momentum": momentum, "weight_decay": weight_decay}
        # A bad explicit value is refused before the checkpoint directory is created or locked.
        self._resolve(explicit, {}, None)
        if augment is not None:
            Augment.from_table(augment, definition.input_shape)
        try:
            self._lock()
            latest = None
            if self.checkpoint_dir is not None:
                removed = ckpt.remove_temp_files(self.checkpoint_dir)
                for path in removed:
                    _log.warning("removed %s, left by a checkpoint write that was cut short", path.name)
                scan = ckpt.find_latest(self.checkpoint_dir, definition, dtype)
                latest, self.skipped = scan.latest, scan.skipped
            stored = latest.header.get("training", {}) if latest else {}
            self.settings = self._resolve(explicit, stored, latest)
            self.augment = self._resolve_augment(augment, stored, latest)
            self.checkpoint_every = _positive_int(_first_given(
                checkpoint_every, stored.get("checkpoint_every"), DEFAULT_CHECKPOINT_EVERY), "checkpoint_every")
            self.eval_every = _positive_int(_first_given(eval_every, stored.get("eval_every"), self.checkpoint_every),
                                            "eval_every")
            self.model = definition.build(seed=self.settings["seed"], dtype=dtype)
            self.optimizer = self._make_optimizer()
            self.step = 0
            self.metrics = {}
            if latest is not None:
                self._load(latest, explicit)
        except BaseException:
            self.close()
            raise
        self._saved_step = self.step

    # -- settings -----------------------------------------------------------------------------

    def _resolve(self, explicit: dict, stored: dict, latest: ckpt.CheckpointInfo | None) -> dict:
        defaults = dict(DEFAULTS, **self.definition.training)
        settings = {}
        for key in ("optimizer", "batch_size", "seed", "momentum", "weight_decay", "lr"):
            value = explicit[key]
            if key == "weight_decay" and settings["optimizer"] == "adamw" and key not in self.definition.training:
                defaults[key] = ADAMW_DECAY
            if value is None:
                value = stored.get(key, defaults.get(key))
            elif latest is not None and key in stored and value != stored[key]:
                where = latest.path.name
                if key in RUN_IDENTITY:
                    raise ConfigError(f"{key} {value!r} differs from the run in {self.checkpoint_dir} "
                                      f"({key} {stored[key]!r}, {where}); use the same {key} or another "
                                      f"--checkpoint-dir")
                note = f"{key} changed from {stored[key]!r} ({where}) to {value!r}"
                _log.warning("%s", note)
                self.warnings.append(note)
            settings[key] = value
        if settings["optimizer"] not in OPTIMIZERS:
            raise ConfigError(f"optimizer {settings['optimizer']!r} is unknown; choose {' or '.join(OPTIMIZERS)}")
        if settings["lr"] is None:
            settings["lr"] = DEFAULT_LR[settings["optimizer"]]
        if not settings["lr"] > 0:   # lr 0 would train for hours and change nothing
            raise ConfigError(f"lr must be > 0, got {settings['lr']!r}")
        settings["batch_size"] = _positive_int(settings["batch_size"], "batch_size")
        seed = settings["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        if settings["optimizer"] == "adam" and (settings["momentum"] or settings["weight_decay"]):
            raise ConfigError("momentum and weight_decay apply to the sgd optimizer (and weight_decay to adamw), "
                              "not adam")
        if settings["optimizer"] == "adamw" and settings["momentum"]:
            raise ConfigError("momentum applies to the sgd optimizer, not adamw")
        return settings

    def _resolve_augment(self, explicit: dict | None, stored: dict, latest: ckpt.CheckpointInfo | None) -> Augment:
        shape = self.definition.input_shape
        if explicit is None:
            table = stored.get("augment", self.definition.augment)
            try:
                return Augment.from_table(table, shape)
            except ConfigError as error:   # a checkpoint's table this version cannot read
                raise CheckpointError(f"{latest.path.name}: {error}") from None
        augment = Augment.from_table(explicit, shape)
        if latest is not None and "augment" in stored and augment.to_table() != stored["augment"]:
            note = f"augment changed from {stored['augment']!r} ({latest.path.name}) to {augment.to_table()!r}"
            _log.warning("%s", note)
            self.warnings.append(note)
        return augment

    def _make_optimizer(self) -> "Optimizer":
        s = self.settings
        if s["optimizer"] == "sgd":
            return OPTIMIZERS["sgd"](self.model, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
        if s["optimizer"] == "adamw":
            return OPTIMIZERS["adamw"](self.model, lr=s["lr"], weight_decay=s["weight_decay"])
        return OPTIMIZERS["adam"](self.model, lr=s["lr"])

    def _load(self, info: ckpt.CheckpointInfo, explicit: dict) -> None:
        ckpt.load_into(info, self.model, self.optimizer)
        # The checkpoint's hyper-parameters were just loaded; explicit ones win (already warned).
        for key in ADJUSTABLE:
            if explicit[key] is not None and key in self.optimizer.hyper_names:
                setattr(self.optimizer, key, explicit[key])
        self.step = info.step
        self.metrics = dict(info.header.get("metrics", {}))
        self.resumed_from = info
        rng = info.header.get("rng", {})
        if rng.get("scheme") != RNG_SCHEME:
            note = f"{info.path.name} used data order {rng.get('scheme')!r}; continuing with {RNG_SCHEME!r}"
            _log.warning("%s", note)
            self.warnings.append(note)
        data = info.header.get("data", {})
        if self.dataset is not None and data.get("fingerprint") not in (None, self.dataset.fingerprint):
            note = (f"the data ({self.dataset.source}) differ from those {info.path.name} was trained on "
                    f"({data.get('source')}); the run goes on with the new data")
            _log.warning("%s", note)
            self.warnings.append(note)
        elif self.dataset is not None and data.get("held_out") not in (None, len(self.dataset.eval_index)):
            note = (f"the same data are split differently from when {info.path.name} was written "
                    f"({data['held_out']} held out then, {len(self.dataset.eval_index)} now; 0.2 splits "
                    "data files in blocks of eight): samples it trained on may now be held out, so "
                    "validation scores read high until the model has trained on the new split")
            _log.warning("%s", note)
            self.warnings.append(note)

    # -- what a long-running owner (the service) may ask and change ----------------------------

    @property
    def unsaved_steps(self) -> int:
        """Steps trained since the newest checkpoint was written or loaded (0 when saved)."""
        return self.step - self._saved_step

    def reconfigure(self, *, lr: float | None = None, momentum: float | None = None, weight_decay: float | None = None,
                    batch_size: int | None = None, keep: int | None = None,
                    max_grad_norm: float | None = _UNCHANGED) -> None:
        """Change the live settings of a running trainer; None (for max_grad_norm: leaving it
        out) keeps a value as it is.

        lr, momentum, weight_decay : the optimizer's (momentum and weight_decay only where
                       the optimizer has them); batch_size : samples per step from the next
                       step on, the rule of a growing store (not a new run: the data order
                       follows the new size); keep : checkpoints kept; max_grad_norm : the
                       divergence guard (None: off). Bad values raise ``ConfigError``.
        """
        for key, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                           ("max_grad_norm", None if max_grad_norm is _UNCHANGED else max_grad_norm)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value >= 0 or key in ("lr", "max_grad_norm") and not value > 0):
                raise ConfigError(f"{key} must be a number > {'0' if key in ('lr', 'max_grad_norm') else '= 0'}, "
                                  f"got {value!r}")
        batch_size = None if batch_size is None else _positive_int(batch_size, "batch_size")
        keep = None if keep is None else _positive_int(keep, "keep")
        if batch_size is not None:
            self.settings["batch_size"] = batch_size
        if keep is not None:
            self.keep = keep
        if max_grad_norm is not _UNCHANGED:
            self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        if lr is not None:
            self.optimizer.lr = lr
        for key, value in (("momentum", momentum), ("weight_decay", weight_decay)):
            if value is not None and key in self.optimizer.hyper_names:
                setattr(self.optimizer, key, value)

    def set_augment(self, table: dict | None) -> dict:
        """Augment the training batches with another ``[augment]`` table from the next step
        on (None: the definition's own; {}: none); returns the table now in use (the keys
        set). A bad table raises ``ConfigError`` naming the key and changes nothing. Like an
        lr change, it is part of the run from then on: the next checkpoint records it."""
        augment = Augment.from_table(self.definition.augment if table is None else table,
                                     self.definition.input_shape)
        self.augment = augment
        return augment.to_table()

    def scale_lr(self, factor: float) -> float:
        """Multiply the learning rate by ``factor`` (a rollback's back-off); return the new one."""
        self.optimizer.lr *= factor
        return self.optimizer.lr

    # -- the directory lock -------------------------------------------------------------------

    def _lock(self):
        if self.checkpoint_dir is None:
            return
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.checkpoint_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise CheckpointError(f"cannot use checkpoint directory {self.checkpoint_dir}: "
                                  f"{error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CheckpointDirBusy(f"another pi-backprop process (pid {holder}) is training into "
                                    f"{self.checkpoint_dir}; stop it or use another --checkpoint-dir",
                                    holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the checkpoint directory. Idempotent; does not write a checkpoint."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)   # closing the descriptor releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- data order ---------------------------------------------------------------------------

    def training_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): the batch trained at step ``step``, augmented as it is trained on."""
        batch = self.batch_indices(step)
        x = self.dataset.x[batch]
        return (self.augment.apply(x, self.settings["seed"], step) if self.augment else x), self.dataset.y[batch]

    def batch_indices(self, step: int) -> np.ndarray:
        """intp (B,): indices into ``dataset.x`` of the batch trained at step ``step`` (0-based)."""
        train = self.dataset.train_index
        n = len(train)
        size = min(self.settings["batch_size"], n)
        per_epoch = n // size
        epoch, position = divmod(step, per_epoch)
        key = (epoch, n, self.settings["seed"])
        if self._perm_cache[0] != key:
            permutation = np.random.default_rng([self.settings["seed"], epoch]).permutation(n)
            self._perm_cache = (key, permutation)
        return train[self._perm_cache[1][position * size:(position + 1) * size]]

    def _need_data(self, what: str) -> None:
        if self.dataset is None:
            raise ConfigError(f"the trainer has no data yet to {what}: set trainer.dataset first")

    def _position(self) -> tuple:
        n = len(self.dataset.train_index)
        per_epoch = n // min(self.settings["batch_size"], n)
        return divmod(self.step, per_epoch)

    # -- running ------------------------------------------------------------------------------

    def run(self, total_steps: int, end_of_run: bool = True) -> RunResult:
        """Train until ``step == total_steps`` or the stop event is set; checkpoint at the end.

        Evaluates every ``eval_every`` steps and at ``total_steps``; checkpoints every
        ``checkpoint_every`` steps, at ``total_steps`` and when stopped. With
        ``end_of_run=False`` (training in bursts, as the service does) only the periodic
        evaluations and checkpoints happen: call ``save_checkpoint()`` when stopping. Raises
        ``DivergenceError`` (nothing written) for a NaN/inf loss, ``CheckpointWriteError`` when
        a checkpoint cannot be written (training state intact; ``run()`` may be called again).
        """
        total_steps = int(total_steps)
        if self.dataset is None:
            raise ConfigError("the trainer has no data yet: set trainer.dataset first")
        if total_steps < 0:
            raise ConfigError(f"total steps must be >= 0, got {total_steps}")
        x, y = self.dataset.x, self.dataset.y
        start, started_at = self.step, time.monotonic()
        written, stopped, losses = None, False, []
        while self.step < total_steps:
            if self.stop_event.is_set():
                stopped = True
                break
            batch = self.batch_indices(self.step)
            x_batch = self.augment.apply(x[batch], self.settings["seed"], self.step) if self.augment else x[batch]
            value = self.model.train_step(x_batch, y[batch], self.loss, self.optimizer)
            self.step += 1
            self._check_divergence(value)
            losses.append(value)
            metrics = None
            last = end_of_run and self.step == total_steps
            if self.step % self.eval_every == 0 or last:
                metrics = self.evaluate()
                metrics["train_loss"] = float(np.mean(losses))
                losses = []
                self.metrics = dict(metrics, eval_step=self.step)
            self.metrics["last_loss"] = value
            saved = None
            if self.checkpoint_dir is not None and (self.step % self.checkpoint_every == 0 or last):
                saved = written = self.save_checkpoint()
            report = StepReport(self.step, total_steps, value, metrics, saved,
                                time.monotonic() - started_at, self.step - start)
            for hook in self.hooks:
                hook(report)
        if self.stop_event.is_set() and self.step < total_steps:
            stopped = True
        if end_of_run and self.checkpoint_dir is not None and self.unsaved_steps:
            written = self.save_checkpoint()
        return RunResult(self.step, total_steps, stopped, written, dict(self.metrics))

    def _check_divergence(self, value: float) -> None:
        bad = None
        if not math.isfinite(value):
            bad = f"loss is {value}"
        elif self.max_grad_norm is not None:
            gradient = self.model.gradient_vector
            norm = math.sqrt(float(np.dot(gradient, gradient)))
            if not norm <= self.max_grad_norm:
                bad = f"gradient norm {norm:.3g} exceeds {self.max_grad_norm:g}"
                value = norm
        if bad is not None:
            last = self.last_checkpoint or (self.resumed_from.path if self.resumed_from else None)
            kept = f"the last checkpoint ({last.name}) is intact" if last else "no checkpoint was written"
            raise DivergenceError(f"training diverged at step {self.step}: {bad}; {kept}; "
                                  f"lower the learning rate (now {self.optimizer.lr:g})", self.step, value)

    def evaluate(self, *, confusion: bool = False) -> dict:
        """``{"eval_loss", "eval_accuracy", "eval_samples"}`` on the held-out split (empty: Nones);
        with ``confusion``, also "eval_confusion": int (classes, classes) counts of held-out
        samples of class i predicted as j (None when there are none)."""
        self._need_data("evaluate")
        index = self.dataset.eval_index
        classes = len(self.definition.classes)
        if len(index) == 0:
            return {"eval_loss": None, "eval_accuracy": None, "eval_samples": 0,
                    **({"eval_confusion": None} if confusion else {})}
        total_loss, correct = 0.0, 0
        counts = np.zeros((classes, classes), np.int64)
        for start in range(0, len(index), EVAL_BATCH):
            batch = index[start:start + EVAL_BATCH]
            outputs = self.model.predict(self.dataset.x[batch])
            labels = self.dataset.y[batch]
            total_loss += self._eval_loss.forward(outputs, labels) * len(batch)
            predicted = outputs.argmax(axis=1)
            correct += int((predicted == labels).sum())
            if confusion:
                np.add.at(counts, (labels, predicted), 1)
        loss = total_loss / len(index)
        result = {"eval_loss": loss if math.isfinite(loss) else None,
                  "eval_accuracy": correct / len(index), "eval_samples": int(len(index))}
        if confusion:
            result["eval_confusion"] = counts
        return result

    # -- checkpoints --------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write ``ckpt-<step>.npz`` now (durably) and prune to ``keep``; returns its path.

        Refuses (``DivergenceError``) to write parameters that are not all finite.
        """
        if self.checkpoint_dir is None:
            raise CheckpointError("this trainer has no checkpoint directory")
        self._need_data("save a checkpoint")   # the checkpoint records the data's position
        if not np.isfinite(self.model.parameter_vector).all():
            raise DivergenceError(f"parameters at step {self.step} hold NaN or inf; not checkpointed",
                                  self.step, float("nan"))
        epoch, position = self._position()
        training = dict(self.settings, lr=self.optimizer.lr, checkpoint_every=self.checkpoint_every,
                        eval_every=self.eval_every, keep=self.keep)
        for key in ("momentum", "weight_decay"):
            if key in self.optimizer.hyper_names:
                training[key] = getattr(self.optimizer, key)
        training["augment"] = self.augment.to_table()
        generator = np.random.default_rng([self.settings["seed"], epoch]).bit_generator
        rng = {"scheme": RNG_SCHEME, "seed": self.settings["seed"], "epoch": epoch,
               "bit_generator": generator.state}
        data = dict(self.dataset.describe(), epoch=epoch, batch_in_epoch=position)
        metrics = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                   for k, v in self.metrics.items()}
        path = ckpt.save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.step,
                                    training=training, rng=rng, data=data, metrics=metrics, keep=self.keep)
        self.last_checkpoint, self._saved_step = path, self.step
        return path

    def restore(self, step: int | None = None) -> ckpt.CheckpointInfo | None:
        """Go back to the newest intact checkpoint (or the initial weights if there is none).

        For recovery after ``DivergenceError``, or a user's roll back: with ``step``, to the
        newest checkpoint at or before it, and the newer checkpoint files are set aside
        (``checkpoint.set_aside``) so that a restart resumes here too. The learning rate in use
        is kept if it was lowered since; returns the ``CheckpointInfo`` restored from, or None.
        """
        info = None
        if self.checkpoint_dir is not None:
            info = ckpt.find_latest(self.checkpoint_dir, self.definition, self.model.dtype, at_most=step).latest
        if step is not None:
            if info is None:
                kept = ", ".join(str(ckpt.step_of(p)) for p in ckpt.checkpoint_files(self.checkpoint_dir or "."))
                raise CheckpointError(f"no checkpoint at or before step {step} to go back to "
                                      f"(steps kept: {kept or 'none'})")
            try:   # before anything changes, so that a failing disk leaves the trainer as it was
                ckpt.set_aside(self.checkpoint_dir, info.step, self.keep)
            except OSError as error:
                raise CheckpointWriteError(f"cannot set aside the checkpoints after step {info.step} in "
                                           f"{self.checkpoint_dir}: {error.strerror or error}", error.errno) from None
        lr = self.optimizer.lr
        fresh = self.definition.build(seed=self.settings["seed"], dtype=self.model.dtype)
        self.model.parameter_vector[...] = fresh.parameter_vector
        for buffer in self.optimizer.buffers.values():
            buffer[...] = 0
        self.optimizer.step_count, self.step = 0, 0
        if info is not None:
            ckpt.load_into(info, self.model, self.optimizer)
            self.step = info.step
            self.metrics = dict(info.header.get("metrics", {}))
        self.optimizer.lr = min(lr, self.optimizer.lr)
        self._saved_step = self.step
        # What is on disk now: the files after info's step may have been set aside.
        self.last_checkpoint = self.resumed_from = None
        if info is not None:
            self.last_checkpoint, self.resumed_from = info.path, info
        return info


def _first_given(*values: Any) -> Any:
    return next(value for value in values if value is not None)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)
