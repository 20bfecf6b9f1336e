"""The service loop: capture, store, train in bursts, checkpoint, predict, report.

    with Service(config, config_path=path, simulate=True) as service:
        service.run()            # until SIGTERM/SIGINT, or --until-accuracy / --max-seconds

Start-up (config checked, hardware opened, newest valid checkpoint resumed, kernels
warmed) ends with ``READY=1``. The main thread trains in short bursts between samples
(which a capture thread queues), checkpoints every K steps or T seconds, predicts every
new sample, and pings the systemd watchdog. SIGTERM/SIGINT finish the current step, write
a checkpoint and return; SIGHUP reloads what the config allows to change live.

Two seams, for every client alike (buttons, signals, the terminal, the web page, MQTT):
``service.commands`` takes commands in (``commands.COMMANDS``), and ``service.events``
sends events out (``events.KINDS``). The status LEDs, the class LEDs and the JSON-lines
file are listeners of those events too.
"""

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Self

import numpy as np

from .. import budget, paths
from ..exc import CheckpointDirBusy, CommandError, ConfigError, DataError, StopWhileCompiling
from ..logs import setup_logging
from ..modeldef import load_definition
from ..nn.augment import table_text
from ..storage.checkpoint import CheckpointWriteError
from ..storage.store import SampleStore
from ..training.datasets import Dataset
from ..training.inference import confidences
from ..training.trainer import DivergenceError, StepReport, Trainer
from . import mqtt, queries, web
from .capture import (
    Capture,
    Sample,
    SimulatedOperator,
    check_pins_for_classes,
    follow_labels,
    open_source,
)
from .commands import Command, Commands
from .config import NO_PIN, Config, augment_for_model, diff_live, load_config
from .events import Event, EventBus
from .labelling import Labelling
from .live import LiveView
from .predictions import PredictionReporter, class_to_light, prediction
from .sdnotify import Notifier
from .storekeeper import StoreKeeper
from .storing import SampleWriter

_log = logging.getLogger(__package__)  # "pi_backprop.service", the name the journal has always shown

MIN_TRAINING_CLASSES = 2     # classes with enough samples before training starts
MIN_VALIDATION = 30          # validation samples before --until-accuracy may end a run
EVAL_SECONDS = 2.0           # evaluate at most this often (and at every checkpoint)
ACCURACY_SAMPLE = 256        # training samples scored for the train-accuracy curve
METRICS_SECONDS = 60.0       # metrics rows are stored this often (and at checkpoints, rests, the stop)
MAX_METRIC_ROWS_KEPT = 1000  # rows kept in memory while the store cannot take them
ERROR_SECONDS = 10.0         # the error pattern stays this long after a part failed, to be seen
# Steps over the same samples before a rest, whatever rest_after_epochs says: a few dozen
# samples make an epoch of one or two steps, and augmented ones keep teaching for longer.
MIN_STEPS_BEFORE_REST = 2000
# Else the status LEDs show the state's name.
LIGHTS_FOR_STATE = {"paused": "idle", "resting": "idle", "stopping": "idle"}


def _augment_text(table: dict) -> str:
    """``augmented (shift=2 noise=0.02)`` or ``not augmented``, for the log."""
    return f"augmented ({table_text(table)})" if table else "not augmented"


def balanced_index(train_index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Training indices with every present class repeated up to the largest class's count,
    so that an epoch shows the classes equally often (class-balanced batches)."""
    groups = [train_index[labels[train_index] == c] for c in np.unique(labels[train_index])]
    largest = max(len(g) for g in groups)
    return np.concatenate([np.resize(g, largest) for g in groups])


class Service:
    """The long-running job. A context manager: ``__exit__`` closes hardware and the store.

    config       : ``config.Config``; config_path: where SIGHUP re-reads it (None: no reload)
    simulate     : simulated camera/sensor and mock pins, whatever the config says
    state_dir    : overrides ``service.state_dir``
    until_accuracy, max_seconds : end ``run()`` when the validation accuracy reaches it, or
                   after that many seconds of running (the desktop demo); None: never
    notifier     : ``sdnotify.Notifier`` (default: from ``$NOTIFY_SOCKET``)
    on_light     : callable(state, text) told of every status-light change (the terminal);
                   the same as subscribing to ``lights`` events
    keep_serving : once until_accuracy or max_seconds is reached, go on serving the web page
                   (and training) until stopped, instead of returning

    ``commands`` (``commands.Commands``) and ``events`` (``events.EventBus``) are the
    interface for clients; ``state`` is the state last published.
    """

    def __init__(self, config: Config, *, config_path: Path | str | None = None, simulate: bool = False,
                 state_dir: Path | str | None = None, until_accuracy: float | None = None,
                 max_seconds: float | None = None, notifier: Notifier | None = None,
                 on_light: Callable[[str, str], object] | None = None, stop_event: threading.Event | None = None,
                 backend_chosen: bool = False, keep_serving: bool = False):
        self.config, self.config_path, self.simulate = config, config_path, simulate
        self.until_accuracy, self.max_seconds = until_accuracy, max_seconds
        self.keep_serving, self._target_reached = keep_serving, False
        self.notifier = notifier if notifier is not None else Notifier()
        self.backend_chosen = backend_chosen   # --backend given: it wins over model.backend
        self.metrics = {}
        self.stop_event = stop_event or threading.Event()
        budget.set_limit(config.service.memory_budget_mb)   # unless --memory-budget said otherwise
        self.state_dir = Path(state_dir or config.service.state_dir or paths.state_dir())
        self.checkpoint_dir = self.state_dir / "checkpoints"
        self.definition = load_definition(config.model.name)
        check_pins_for_classes(config, self.definition)
        self.augment = augment_for_model(config, self.definition)   # before any hardware is opened
        self.events = EventBus()
        if on_light is not None:
            self.events.subscribe(lambda event: on_light(event.data["state"], event.data["text"]), "lights")
        self.commands = Commands(self.definition.classes)
        self.live = LiveView()    # the newest capture, for the web page
        self.web = self.mqtt = None
        self.labelling = Labelling(self.definition.classes, yielding=(SimulatedOperator.SOURCE,))
        self._handle_commands()   # before any client (a button) can send one
        self._stack = contextlib.ExitStack()
        self.trainer = self.keeper = self.lights = self.capture = self.operator = self.buttons = None
        self.state = None
        self.training_stopped = False
        self.paused = False
        self._error_until = -math.inf    # monotonic time until which the LEDs show "error"
        self._logged_light = None
        self._last_ping = -math.inf
        self._trained_yet = False
        self.rollbacks = 0
        self._checkpoint_failure = None
        self._checkpoint_failures = 0     # writes failed in a row
        self._compiling = False           # in the warm-up: a stop signal cuts it short
        self.resting = False              # trained enough on the samples there are
        self._metric_rows, self._metrics_flushed = [], 0.0   # metrics not stored yet
        self._new_data_step = 0           # the step at which the training data last changed
        self._new_since_checkpoint = False
        self._metrics_failing = False
        self.writer = None
        self.summary = {}

    # -- start ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close hardware, store and trainer (idempotent)."""
        self.commands.close()
        if self.capture is not None:
            self.stop_event.set()
            self.capture.join()
        self._stack.close()
        self.notifier.close()

    def _open(self):
        config, definition = self.config, self.definition
        # From the start: a SIGTERM while the kernels compile must stop us cleanly too.
        self._stack.enter_context(self._signals())
        if config.model.backend != "auto" and not self.backend_chosen:
            from ..nn import set_backend
            set_backend(config.model.backend)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the state directory {self.state_dir}: {error.strerror or error}; "
                              "give a writable one with --state-dir or service.state_dir") from None
        self.lights = self._stack.enter_context(self._open_lights())
        self.events.subscribe(self._show_state, ("state", "checkpoint"))
        self._publish_state("starting")
        # The trainer's lock first: a second run on this state directory is refused before it
        # has touched anything on disk (the store's saved bounds among them).
        try:
            self.trainer = self._stack.enter_context(self._make_trainer())
        except CheckpointDirBusy as error:
            raise ConfigError(f"another pi-backprop process (pid {error.holder}) runs with the state directory "
                              f"{self.state_dir}; stop it first (sudo systemctl stop pi-backprop) or give "
                              "another --state-dir") from None
        store_path = Path(config.store.path) if config.store.path else self.state_dir / "samples.db"
        bounds = {"max_per_class": config.store.max_per_class, "max_bytes": config.store.max_bytes,
                  "validation_fraction": config.training.validation_fraction}
        self.keeper = StoreKeeper(store_path, definition, bounds, on_replaced=self._store_replaced)
        self._stack.callback(self.keeper.close)   # the store in use then (it may be replaced)
        self.keeper.open()
        self.writer = SampleWriter(self.keeper, on_stored=self._sample_stored, on_failure=self._part_failed,
                                   batch_seconds=config.store.write_every_seconds)
        read, simulated = open_source(config, definition, self._stack, simulate=self.simulate,
                                      stop_event=self.stop_event, live=self.live)
        buttons, button_pins = self._open_buttons()
        self.buttons = buttons
        follow = None if simulated is None else follow_labels(simulated, self.labelling)
        if simulated is not None and config.labels.simulated:
            self.operator = SimulatedOperator(simulated, len(definition.classes), buttons=buttons,
                                              button_pins=button_pins, seed=config.model.seed,
                                              commands=self.commands, when_off=follow,
                                              person=self.labelling.ruling_class)
            self._stack.callback(self.operator.close)
        self.reporter = PredictionReporter(definition.classes, jsonl=config.predict.jsonl,
                                           max_bytes=config.predict.jsonl_max_bytes,
                                           log_all=config.predict.log_all)
        self.events.subscribe(self.reporter.on_event, "prediction")
        self.events.subscribe(lambda event: self.lights.show_prediction(class_to_light(event.data)), "prediction")
        self._warm_up_or_stop()
        self.capture = Capture(read, self.labelling.take, interval=config.source.interval,
                               stop_event=self.stop_event,
                               before=self.operator.before_capture if self.operator else follow,
                               shown=(lambda: simulated.last_label) if simulated is not None else None)
        self.web = web.start(self)
        if self.web is not None:
            self._stack.callback(self.web.close)
        self.mqtt = mqtt.start(self)
        if self.mqtt is not None:
            self._stack.callback(self.mqtt.close)

    def _open_lights(self):
        from ..hardware.leds import StatusLights

        lights, pins = self.config.lights, list(self.config.lights.pins)
        wiring = {}
        if lights.kind == "single":
            wiring["led"] = pins[0]
        elif lights.kind == "separate":
            wiring["leds"] = dict(zip(("red", "green", "blue"), pins))
        elif lights.kind == "rgb":
            wiring["rgb"] = tuple(pins)
        class_leds = [None if pin == NO_PIN else pin for pin in lights.class_pins]
        factory = self._pin_factory() if wiring or any(p is not None for p in class_leds) else None
        return StatusLights(**wiring, class_leds=class_leds, active_high=lights.active_high,
                            on_change=self._lights_changed, pin_factory=factory)

    def _pin_factory(self):
        from ..hardware.pins import pin_factory, reset_pin_factory

        factory = pin_factory(simulate=True if self.simulate else None)
        self._stack.callback(reset_pin_factory)
        return factory

    def _open_buttons(self):
        """(LabelButtons or None, {class index: mock pin} for the simulated operator).

        The buttons are a client like any other: a press in ``press`` mode sends
        ``label_next``; in ``hold`` mode the labelling reads them at each capture."""
        labels = self.config.labels
        if not labels.pins:
            return None, {}
        from ..hardware.buttons import LabelButtons

        factory = self._pin_factory()
        pins = [None if pin == NO_PIN else pin for pin in labels.pins]

        def pressed(index: int) -> None:
            if buttons.mode == "press":
                with contextlib.suppress(CommandError):   # pressed while the service stops
                    self.commands.submit("label_next", label=index, source="buttons")

        buttons = self._stack.enter_context(LabelButtons(
            pins, class_names=self.definition.classes, mode=labels.mode, bounce_time=labels.bounce_time,
            pull_up=labels.pull_up, pin_factory=factory, on_press=pressed))
        self.labelling.add_level(lambda: buttons.take_label() if buttons.mode == "hold" else None)
        mock = {}
        if hasattr(factory, "reset"):  # gpiozero's MockFactory: the operator may press them
            mock = {index: factory.pin(pin) for index, pin in enumerate(pins) if pin is not None}
        return buttons, mock

    def _make_trainer(self):
        training = self.config.training
        sgd = training.optimizer == "sgd"
        trainer = Trainer(self.definition, None, self.checkpoint_dir, optimizer=training.optimizer,
                          lr=training.lr, seed=self.config.model.seed,
                          momentum=training.momentum if sgd else None,
                          weight_decay=training.weight_decay if sgd or training.optimizer == "adamw" else None,
                          # Always explicit: a run resumed without the key goes back to the
                          # definition's table (the trainer would keep the checkpoint's).
                          augment=self.augment,
                          # The service decides when to checkpoint (_checkpoint_if_due: steps,
                          # seconds and a minimum interval for the SD card) and to evaluate.
                          checkpoint_every=sys.maxsize, eval_every=sys.maxsize, keep=training.keep,
                          max_grad_norm=training.max_grad_norm, stop_event=self.stop_event,
                          hooks=[self._after_step])
        # batch_size may change from one start to the next (the store grows): not a new run.
        trainer.reconfigure(batch_size=training.batch_size)
        for path, reason in trainer.skipped:
            _log.warning("skipped damaged checkpoint %s: %s", path.name, reason)
        if trainer.resumed_from is not None:
            _log.info("resumed from %s (step %d)", trainer.resumed_from.path, trainer.step)
        else:
            _log.info("no checkpoint in %s: starting %s from fresh weights", self.checkpoint_dir, self.definition.name)
        _log.info("training batches: %s", _augment_text(trainer.augment.to_table()))
        return trainer

    def _warm_up_or_stop(self):
        """The warm-up, which a stop signal cuts short: the first compile takes minutes on a
        Zero 2 W, longer than systemd waits, and there is nothing to save yet."""
        _log.info("loading the kernels (the first start after an install or upgrade compiles them)")
        self._compiling = True
        try:
            self._warm_up()
        except StopWhileCompiling:
            _log.info("stopped while the kernels compiled: nothing to save yet")
        except Exception:
            # The stop can land inside one of llvmlite's ctypes callbacks, which swallows it
            # and leaves the compile to fail in its own way: after a stop, that is the stop.
            if not self.stop_event.is_set():
                raise
            _log.info("stopped while the kernels compiled: nothing to save yet")
        finally:
            self._compiling = False

    def _warm_up(self):
        """Compile (or load from the cache) the kernels before READY, on a throwaway model."""
        started = time.monotonic()
        model = self.definition.build(seed=0)
        x = np.zeros((2,) + self.definition.input_shape, np.float32)
        optimizer = type(self.trainer.optimizer)(model, lr=1e-9)
        model.train_step(x, np.zeros(2, np.int64), self.definition.make_loss(), optimizer)
        model.predict(x[:1])
        _log.info("kernels ready in %.1f s", time.monotonic() - started)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict:
        """Run until stopped; return a summary (samples, steps, accuracy, checkpoint path)."""
        self.started = time.monotonic()
        self._last_checkpoint_time = self._last_eval = self._last_status = self.started
        self._dataset_version, self._next_refresh, self._burst_losses = None, 0.0, []
        self._metric_rows, self._metrics_flushed = [], self.started
        if self.stop_event.is_set():   # stopped while starting: never READY
            self._stop()
            return self.summary
        self.capture.start()
        self._update_lights()    # "collecting" from READY on, not only after the first pass
        self.notifier.ready(self._status_text())
        _log.info("ready: %s on %s, state in %s", self.definition.name,
                  "simulated hardware" if self.simulate else self.config.source.kind, self.state_dir)
        while not self.stop_event.is_set():
            self.commands.run_queued()
            self.keeper.watch()
            self.writer.retry()
            got_samples = self._take_samples()
            trained = self._train_burst()
            self._checkpoint_if_due()
            self._update_lights()
            self._report_status()
            if self._finished():
                break
            if not (trained or got_samples):
                new = self.capture.get(timeout=0.1)   # idle: wait for the next sample
                if new is not None:
                    self._handle_sample(new)
        self._stop()
        return self.summary

    def _take_samples(self) -> bool:
        got = False
        while (sample := self.capture.get()) is not None:
            self._handle_sample(sample)
            self._ping_watchdog()       # a slow store must not starve the watchdog
            got = True
        return got

    def _handle_sample(self, sample: Sample) -> None:
        model = self.trainer.model
        scores = confidences(model.predict(sample.x[None]), self.definition.loss)[0]
        self.events.publish("prediction", **prediction(sample, scores, self.trainer.step, self.definition.classes,
                                                       self.config.predict.min_confidence))
        if sample.label is None and not self.config.store.keep_unlabelled:
            return
        self.writer.add(sample, "simulated" if self.simulate else self.config.source.kind)

    @property
    def store(self) -> SampleStore | None:
        """The sample store in use now (repaired, recreated or reopened ones replace it)."""
        return None if self.keeper is None else self.keeper.store

    def _store_replaced(self, store: SampleStore) -> None:
        self._dataset_version, self._next_refresh = None, 0.0   # read the training data afresh
        if self.writer is not None:
            self.writer.store_replaced()

    def _sample_stored(self, sample_id: int, sample: Sample, source: str) -> None:
        if sample.label is not None:
            self._new_since_checkpoint = True
        self.events.publish("sample", id=sample_id, label=sample.label, source=source, time=sample.time,
                            **{"class": None if sample.label is None else self.definition.classes[sample.label]})

    def _train_burst(self) -> bool:
        if self.training_stopped or self.paused or not self.config.training.enabled or not self._refresh_dataset():
            return False
        if self.resting:
            return False
        trainer = self.trainer
        if not self._trained_yet:
            # The checkpoint clock starts with training, not with collecting.
            self._trained_yet, self._last_checkpoint_time = True, time.monotonic()
        try:
            trainer.run(trainer.step + self.config.training.burst_steps, end_of_run=False)
        except DivergenceError as error:
            self._roll_back(error)
            return True
        if time.monotonic() - self._last_eval >= EVAL_SECONDS:
            self._evaluate()
        if self._learnt_enough():
            self._rest()
        return True

    def _learnt_enough(self) -> bool:
        """``rest_after_epochs`` epochs, and MIN_STEPS_BEFORE_REST steps, trained over the same samples."""
        epochs = self.config.training.rest_after_epochs
        trainer = self.trainer
        if not epochs or trainer.dataset is None or not len(trainer.dataset.train_index):
            return False
        steps = trainer.step - self._new_data_step
        done = steps * trainer.settings["batch_size"] / len(trainer.dataset.train_index)
        return done >= epochs and steps >= MIN_STEPS_BEFORE_REST

    def _rest(self) -> None:
        """Stop training until new samples come: more epochs over the same ones teach little
        and wear the SD card. The parameters are saved as soon as min_checkpoint_seconds
        allows."""
        self.resting = True
        self._evaluate()
        self._checkpoint_if_due()
        self._flush_metrics(now=True)
        accuracy = self.metrics.get("eval_accuracy")
        _log.info("trained %d epochs over the same %d samples (val acc %s): resting until new samples come",
                  self.config.training.rest_after_epochs, len(self.trainer.dataset),
                  "-" if accuracy is None else f"{accuracy:.1%}")
        self._update_lights()

    def _refresh_dataset(self) -> bool:
        """Reload the training data from the store when it has grown; True if training can go on."""
        now = time.monotonic()
        if now < self._next_refresh:
            return self.trainer.dataset is not None
        try:
            version = self.store.labelled_version()
            if version != self._dataset_version and (self.store.class_counts("train") >= self.config.training
                                                     .min_samples_per_class).sum() >= MIN_TRAINING_CLASSES:
                # Let go of the old copy first: the store's data are held once, not twice.
                self.trainer.dataset = None
                x, y, eval_mask = self.store.load_split()
                dataset = Dataset.from_arrays(x, y, self.definition, source=str(self.store.path), eval_mask=eval_mask)
                dataset.train_index = balanced_index(dataset.train_index, dataset.y)
                self.trainer.dataset = dataset
                self._dataset_version = version
                self._new_data_step = self.trainer.step
                if self.resting:
                    _log.info("new samples: training again at step %d", self.trainer.step)
                    self.resting = False
                    self._update_lights()    # "training" before its first step, not after the burst
        except DataError as error:      # a locked or failing store: train on when it reads again
            self.keeper.failed(error)
            if not self.keeper.damaged:  # a damaged one: the keeper's repair says so
                _log.warning("training data not read from the store: %s", error)
            self._part_failed("store", f"training data not read: {error}")
            self._dataset_version = None
        # Reading the store costs time: the bigger it is, the less often.
        self._next_refresh = now + max(2.0, 20 * (time.monotonic() - now))
        return self.trainer.dataset is not None

    def _after_step(self, report: StepReport) -> None:
        self._ping_watchdog()
        self._burst_losses.append(report.loss)

    def _evaluate(self):
        trainer, dataset = self.trainer, self.trainer.dataset
        metrics = trainer.evaluate(confusion=True)
        confusion = metrics.pop("eval_confusion")
        rng = np.random.default_rng(trainer.step)
        index = dataset.train_index
        sample = rng.choice(index, size=min(ACCURACY_SAMPLE, len(index)), replace=False)
        train_accuracy = float((trainer.model.predict(dataset.x[sample]).argmax(1) == dataset.y[sample]).mean())
        loss = float(np.mean(self._burst_losses)) if self._burst_losses else None
        self._burst_losses = []
        self.metrics = dict(metrics, train_accuracy=train_accuracy, train_loss=loss)
        trainer.metrics.update(self.metrics)
        self.events.publish("metrics", step=trainer.step, lr=trainer.optimizer.lr, **self.metrics,
                            confusion=None if confusion is None else confusion.tolist())
        self._metric_rows.append((trainer.step, time.time(), loss, train_accuracy, metrics["eval_loss"],
                                  metrics["eval_accuracy"], trainer.optimizer.lr))
        self._flush_metrics()
        self._last_eval = time.monotonic()

    def _flush_metrics(self, *, now: bool = False) -> None:
        """Store the metrics rows kept since the last flush, in one transaction, every
        ``METRICS_SECONDS`` (or ``now``: at a checkpoint, a rest, the stop); a row a
        transaction would write a page of the card every two seconds."""
        if not self._metric_rows or not (now or time.monotonic() - self._metrics_flushed >= METRICS_SECONDS):
            return
        try:
            self.store.record_metric_rows(self._metric_rows)
            self._metric_rows, self._metrics_failing = [], False
        except DataError as error:   # said once, until they are stored again; kept meanwhile
            self.keeper.failed(error)
            if not self._metrics_failing and not self.keeper.damaged:
                _log.warning("metrics not stored: %s", error)
            self._metrics_failing = True
            del self._metric_rows[:-MAX_METRIC_ROWS_KEPT]
        self._metrics_flushed = time.monotonic()

    def _forget_metrics_after(self, step: int) -> None:
        """After a roll back: the history beyond ``step``, stored or not yet, goes."""
        self._metric_rows = [row for row in self._metric_rows if row[0] <= step]
        with contextlib.suppress(DataError):
            self.store.drop_metrics_after(step)

    def _roll_back(self, error: DivergenceError) -> None:
        self.rollbacks += 1
        trainer = self.trainer
        info = trainer.restore()
        trainer.scale_lr(self.config.training.lr_backoff)
        self._forget_metrics_after(trainer.step)
        self.events.publish("rollback", step=trainer.step, lr=trainer.optimizer.lr, reason=str(error),
                            automatic=True)
        self._part_failed("training", str(error))
        where = f"{info.path.name} (step {info.step})" if info else "the initial weights"
        _log.warning("%s; rolled back to %s, learning rate now %.3g (rollback %d of %d)", error, where,
                     trainer.optimizer.lr, self.rollbacks, self.config.training.max_rollbacks)
        if self.rollbacks >= self.config.training.max_rollbacks:
            self.training_stopped = True
            _log.error("training stopped after %d rollbacks in a row; still predicting with %s. "
                       "Lower training.lr and reload the config (sudo systemctl reload pi-backprop)",
                       self.rollbacks, where)

    def _checkpoint_if_due(self):
        """Every ``checkpoint_every_steps`` steps or ``checkpoint_every_seconds``, whichever
        comes first, but not within ``min_checkpoint_seconds`` of the last one."""
        trainer, training = self.trainer, self.config.training
        if trainer.dataset is None or not trainer.unsaved_steps:
            return
        elapsed = time.monotonic() - self._last_checkpoint_time
        steps = trainer.unsaved_steps
        # The step rule only while new samples come: training on without them changes the
        # model little, and a checkpoint every few seconds would wear the card.
        if elapsed >= training.checkpoint_every_seconds or (
                (self.resting or self._new_since_checkpoint and steps >= training.checkpoint_every_steps)
                and elapsed >= training.min_checkpoint_seconds):
            self._save_checkpoint()

    def _save_checkpoint(self):
        try:
            self._evaluate()
            path = self._checkpoint_written(self.trainer.save_checkpoint())
        except CheckpointWriteError as error:
            # Said once while it keeps failing (a full disk fails every attempt the same way).
            first = self._checkpoint_failures == 0
            self._checkpoint_failures += 1
            _log.log(logging.ERROR if first else logging.DEBUG, "checkpoint not written: %s%s", error,
                     "; trying again at every checkpoint, said again once one is written" if first else "")
            self._part_failed("checkpoint", f"checkpoint not written: {error}")
            path, self._checkpoint_failure = None, str(error)
        except DivergenceError as error:
            self._roll_back(error)
            path, self._checkpoint_failure = None, f"{error}; rolled back instead"
        self._last_checkpoint_time = time.monotonic()
        return path

    def _checkpoint_written(self, path: Path) -> Path:
        if self._checkpoint_failures:
            _log.info("checkpoints are written again (%d attempts failed)", self._checkpoint_failures)
        self.rollbacks, self._checkpoint_failures, self._new_since_checkpoint = 0, 0, False
        self._flush_metrics(now=True)
        self._last_checkpoint_time = time.monotonic()
        _log.info("checkpoint %s (step %d)", path.name, self.trainer.step)
        self.events.publish("checkpoint", path=str(path), step=self.trainer.step)
        return path

    def _part_failed(self, part: str, message: str) -> None:
        """A part (store, disk, checkpoint, training) failed: say so, and show the error
        pattern a while."""
        self._error_until = time.monotonic() + ERROR_SECONDS
        self.events.publish("failure", part=part, message=message)
        self._update_lights()

    def _update_lights(self):
        """Publish the state the service is in, if it changed (the LEDs listen)."""
        if self.capture.failing or self.training_stopped or time.monotonic() < self._error_until:
            state = "error"
        elif self.paused:
            state = "paused"
        elif self.resting:
            state = "resting"
        elif not self.config.training.enabled:
            state = "idle"
        elif self.trainer.dataset is None:
            state = "collecting"
        else:
            state = "training"
        self._publish_state(state)

    def _publish_state(self, state: str) -> None:
        if state != self.state:
            previous, self.state = self.state, state
            self.events.publish("state", state=state, previous=previous)

    def _show_state(self, event: Event) -> None:
        """The status LEDs' listener; a checkpoint flash returns to the state by itself."""
        if event.kind == "checkpoint":
            self.lights.flash_checkpoint()
        else:
            self.lights.set_state(LIGHTS_FOR_STATE.get(event.data["state"], event.data["state"]))

    def _ping_watchdog(self):
        """``WATCHDOG=1`` at least every half of systemd's ``WatchdogSec`` (the notifier's
        interval is already half of it; pinging at half of that leaves room for a slow step)."""
        interval = self.notifier.watchdog_interval
        if interval is not None and self.config.service.watchdog:
            now = time.monotonic()
            if now - self._last_ping >= interval / 2:
                self.notifier.watchdog()
                self._last_ping = now

    def _report_status(self):
        now = time.monotonic()
        interval = self.config.service.status_interval
        self._ping_watchdog()
        if now - self._last_status >= interval:
            self._last_status = now
            labelled = self.keeper.labelled()
            text = self._status_text(labelled)
            self.notifier.status(text)
            _log.info("%s", text)
            self.events.publish("status", text=text, step=self.trainer.step, samples=labelled)

    def _status_text(self, labelled: int | None = None) -> str:
        trainer, metrics = self.trainer, self.metrics
        if labelled is None:
            labelled = self.keeper.labelled()
        labelled = "?" if labelled is None else labelled
        parts = []
        if self.training_stopped:
            parts.append("training stopped (diverged)")
        elif self.paused:
            parts.append(f"training paused at step {trainer.step}, {labelled} samples")
        elif self.resting:
            accuracy = metrics.get("eval_accuracy")
            parts.append(f"trained: step {trainer.step}" + (f", val acc {accuracy:.1%}" if accuracy is not None else "")
                         + f", {labelled} samples; resting until new samples come")
        elif trainer.dataset is None:
            parts.append(f"collecting: {labelled} labelled samples")
        else:
            parts.append(f"step {trainer.step}")
            if metrics.get("train_loss") is not None:
                parts.append(f"loss {metrics['train_loss']:.3f}")
            if metrics.get("eval_accuracy") is not None:
                parts.append(f"val acc {metrics['eval_accuracy']:.1%}")
            parts.append(f"{labelled} samples")
        if self.reporter.last:
            parts.append(f"last: {self.reporter.last}")
        if self.capture.failing:
            parts.append(f"capture failing ({self.capture.failures}x)")
        return ", ".join(parts)

    def _finished(self) -> bool:
        """True once --max-seconds or --until-accuracy is reached (with ``keep_serving``, the
        service says so once and runs on, for the web page, until it is stopped)."""
        if self._target_reached:
            return False
        reached = None
        if self.max_seconds is not None and time.monotonic() - self.started >= self.max_seconds:
            reached = f"time limit of {self.max_seconds:.0f} s reached"
        accuracy = self.metrics.get("eval_accuracy")
        if (reached is None and self.until_accuracy is not None and accuracy is not None
                and accuracy >= self.until_accuracy and self.metrics.get("eval_samples", 0) >= MIN_VALIDATION):
            reached = (f"validation accuracy {100 * accuracy:.1f}% reached the target of "
                       f"{100 * self.until_accuracy:.1f}%")
        if reached is None:
            return False
        if self.keep_serving and self.web is not None:
            self._target_reached = True
            _log.info("%s; still serving the web page at http://%s:%d/ until stopped (Ctrl-C)", reached,
                      "127.0.0.1" if self.web.access.loopback else self.config.web.host, self.web.port)
            return False
        _log.info("%s", reached)
        return True

    # -- stop and reload ------------------------------------------------------------------------

    def _stop(self):
        self.stop_event.set()
        self.commands.close()
        if self.trainer.dataset is not None and self.trainer.unsaved_steps:
            self.notifier.stopping("stopping: writing a checkpoint")
            self._save_checkpoint()
        else:
            self.notifier.stopping("stopping: nothing new to save")
        self._flush_metrics(now=True)
        self._publish_state("stopping")
        self.writer.retry(now=True)
        if self.writer.waiting:
            _log.error("%d samples waiting for the sample store were not stored: it stayed locked",
                       self.writer.waiting)
        samples = self.keeper.labelled()
        self.summary = {"samples": samples, "steps": self.trainer.step,
                        "accuracy": self.metrics.get("eval_accuracy"),
                        "live_accuracy": self.reporter.recent_accuracy,
                        "checkpoint": self.trainer.last_checkpoint or (
                            self.trainer.resumed_from.path if self.trainer.resumed_from else None),
                        "unsaved_steps": self.trainer.unsaved_steps if self.trainer.dataset is not None else 0,
                        "state_dir": self.state_dir}

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        signalled = set()

        def stop(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if signum == signal.SIGINT and signal.SIGINT in signalled:
                raise KeyboardInterrupt   # a second Ctrl-C: out now, without the final checkpoint
            signalled.add(signum)
            self.stop_event.set()
            if self._compiling:
                self.notifier.stopping(f"stopping ({name}): nothing to save yet")
                raise StopWhileCompiling
            _log.info("%s: finishing the current step, then stopping (Ctrl-C again to quit at once)", name)

        previous = {sig: signal.signal(sig, handler) for sig, handler in
                    ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, self._on_sighup))}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        try:
            self.commands.submit("reload", source="SIGHUP")
        except CommandError:   # stopping already (the final checkpoint may be being written)
            _log.info("SIGHUP while stopping: not reloaded")

    # -- commands -------------------------------------------------------------------------------

    def _handle_commands(self):
        """Register what each command does (``commands.COMMANDS`` says what they mean)."""
        labelling, handle = self.labelling, self.commands.handle
        handle("label_start", lambda c: labelling.start(c.args["label"], c.source, c.args.get("seconds")))
        handle("label_stop", lambda c: labelling.stop(c.source))
        handle("label_next", lambda c: labelling.next(c.args["label"]))
        handle("stop", lambda c: self.stop_event.set())
        handle("pause", self._pause)
        handle("resume", self._resume)
        handle("delete_sample", self._delete_sample)
        handle("roll_back", self._user_roll_back)
        handle("checkpoint", self._checkpoint_now)
        handle("reload", lambda c: self._reload(c.source or "reload"))
        queries.register(self)

    def _pause(self, command: Command) -> str | None:
        if not self.paused:
            self.paused = True
            _log.info("training paused (%s) at step %d; capturing and predicting go on",
                      command.source or "command", self.trainer.step)
            self._update_lights()
        return self.state

    def _resume(self, command: Command) -> str | None:
        if self.paused or self.training_stopped:
            _log.info("training resumed (%s) at step %d", command.source or "command", self.trainer.step)
        self.paused, self.training_stopped, self.rollbacks = False, False, 0
        self._update_lights()
        return self.state

    def _delete_sample(self, command: Command) -> bool:
        deleted = self.store.delete_sample(command.args["id"])
        if deleted:
            _log.info("sample %d deleted (%s)", command.args["id"], command.source or "command")
            self.events.publish("sample", id=command.args["id"], deleted=True)
            self.training_data_changed()
        return deleted

    def training_data_changed(self) -> None:
        """Samples went from the store: train on the store as it is now."""
        self._next_refresh = 0.0

    def pending_metric_rows(self) -> list:
        """The metrics rows (``storage.store.Metric``'s fields) not in the store yet."""
        return list(self._metric_rows)

    def _user_roll_back(self, command: Command) -> int:
        trainer, step = self.trainer, command.args.get("step")
        info = trainer.restore(trainer.step if step is None else step)
        self._forget_metrics_after(trainer.step)
        where = f"{info.path.name} (step {info.step})" if info else "the initial weights"
        _log.info("rolled back to %s (%s)", where, command.source or "command")
        self.events.publish("rollback", step=trainer.step, lr=trainer.optimizer.lr,
                            reason=f"asked by {command.source or 'a command'}", automatic=False)
        return trainer.step

    def _checkpoint_now(self, command: Command) -> str | None:
        if self.trainer.dataset is None or not self.trainer.unsaved_steps:
            return None
        path = self._save_checkpoint()
        if path is None:
            raise CommandError(f"checkpoint not written: {self._checkpoint_failure}")
        return str(path)

    def _reload(self, source: str = "SIGHUP") -> dict | None:
        if self.config_path is None:
            _log.warning("%s: no config file to reload", source)
            return
        self.notifier.reloading()
        try:
            return self._apply_config(source)
        finally:
            self.notifier.ready()

    def _apply_config(self, source: str) -> dict:
        try:
            new = load_config(self.config_path)
            # Checked against the running model; a new model (a restart key) is checked when it starts.
            augment = augment_for_model(new, self.definition) if new.model.name == self.config.model.name else None
        except ConfigError as error:
            _log.error("%s: config not reloaded, the running one stays: %s", source, error)
            raise ConfigError(f"config not reloaded, the running one stays: {error}") from None
        changes, old = diff_live(self.config, new), self.config
        training = new.training
        # Unchanged, the lr a rollback lowered stays; a new one also lets stopped training retry.
        new_lr = training.lr if training.lr != old.training.lr else None
        # First what checks the values (and raises, changing nothing); then the rest.
        self.trainer.reconfigure(lr=new_lr, momentum=training.momentum, weight_decay=training.weight_decay,
                                 batch_size=training.batch_size, keep=training.keep,
                                 max_grad_norm=training.max_grad_norm)
        self.config = new
        if augment is not None and augment != self.trainer.augment.to_table():
            self.augment = self.trainer.set_augment(augment)
            _log.info("%s: training batches from step %d: %s", source, self.trainer.step, _augment_text(augment))
        self.capture.interval = new.source.interval
        if self.operator is not None:
            self.operator.enabled = new.labels.simulated
        if self.buttons is not None:
            self.buttons.mode = new.labels.mode
        if new_lr is not None:
            if self.training_stopped:
                _log.info("%s: new learning rate %g: training resumes", source, training.lr)
            self.training_stopped, self.rollbacks = False, 0
        self.keeper.bounds.update(max_per_class=new.store.max_per_class, max_bytes=new.store.max_bytes)
        self.writer.batch_seconds = new.store.write_every_seconds
        try:
            self.store.set_limits(max_per_class=new.store.max_per_class, max_bytes=new.store.max_bytes)
        except DataError as error:
            _log.warning("%s: store bounds not applied now (%s); they apply on the next start", source, error)
        self.reporter.configure(jsonl=new.predict.jsonl, max_bytes=new.predict.jsonl_max_bytes,
                                log_all=new.predict.log_all)
        if new.logging.level != old.logging.level:   # else a --verbose run stays verbose
            setup_logging(level=new.logging.level)
        if changes.live:
            _log.info("%s: applied %s", source, ", ".join(changes.live))
        if changes.restart:
            _log.warning("%s: %s changed but need a restart (sudo systemctl restart pi-backprop)",
                         source, ", ".join(changes.restart))
        if not changes:
            _log.info("%s: config unchanged", source)
        self.events.publish("reload", applied=list(changes.live), restart=list(changes.restart))
        return {"applied": list(changes.live), "restart": list(changes.restart)}

    def _lights_changed(self, state: str, text: str) -> None:
        # Called from the caller's thread or the LED thread: only logs and hands on.
        # A checkpoint flash and the return from it are routine: debug, not the journal.
        routine = state == "checkpoint" or state == self._logged_light
        if state != "checkpoint":
            self._logged_light = state
        _log.log(logging.DEBUG if routine else logging.INFO, "LEDs: %s", text)
        self.events.publish("lights", state=state, text=text)


__all__ = ["Service", "balanced_index"]
