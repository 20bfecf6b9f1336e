"""The service's answers to the questions of ``commands`` (overview, samples, history) and
its class-wide changes (clear_class). They run in the loop's thread, which owns the store:
a client asks through ``Commands.submit`` and waits for the answer."""

import logging

from ..exc import CommandError
from ..storage.checkpoint import checkpoint_files, step_of
from ..storage.store import Metric
from .commands import Command

_log = logging.getLogger(__package__)

SAMPLES_LISTED = 12   # the default ``limit`` of ``samples``


def register(service) -> None:
    """Hand each question's command to its function below."""
    handle = service.commands.handle
    handle("overview", lambda command: overview(service))
    handle("samples", lambda command: samples(service, command))
    handle("history", lambda command: history(service))
    handle("clear_class", lambda command: clear_class(service, command))


def overview(service) -> dict:
    """What a page shows beside the live view:

    model (name), kind ("image" or "sensor"), input_shape, classes [{index, name, samples}],
    unlabelled (samples), store_problem (a line, or None), checkpoints [{step, name, time,
    bytes}] newest first, step, state, paused, training (enabled in the config), min_confidence
    """
    definition, trainer, store = service.definition, service.trainer, service.store
    counts, problem = {}, None
    if store is None:
        problem = "the sample store is not open"
    else:
        try:
            counts = store.counts("all")
        except Exception as error:   # noqa: BLE001 - a failing store is reported, not raised
            problem = str(error)
    checkpoints = []
    for path in checkpoint_files(service.checkpoint_dir):
        try:
            stat = path.stat()
        except OSError:
            continue
        checkpoints.append({"step": step_of(path), "name": path.name, "time": stat.st_mtime, "bytes": stat.st_size})
    return {
        "model": definition.name, "kind": "image" if len(definition.input_shape) == 3 else "sensor",
        "input_shape": list(definition.input_shape),
        "classes": [{"index": i, "name": name, "samples": int(counts.get(i, 0))}
                    for i, name in enumerate(definition.classes)],
        "unlabelled": int(counts.get(None, 0)), "store_problem": problem, "checkpoints": checkpoints,
        "step": int(trainer.step) if trainer is not None else 0, "state": service.state,
        "paused": bool(service.paused), "training": bool(service.config.training.enabled),
        "min_confidence": float(service.config.predict.min_confidence),
    }


def samples(service, command: Command) -> list:
    """The newest samples of a class: [(id, time, x)], newest first."""
    store = service.store
    if store is None:
        raise CommandError("samples: the sample store is not open")
    return store.newest_samples(command.args["label"], command.args.get("limit", SAMPLES_LISTED))


def history(service) -> list:
    """The stored training history and the rows not stored yet, oldest first."""
    stored = service.store.metrics() if service.store is not None else []
    newest = stored[-1].step if stored else -1
    return stored + [Metric(*row) for row in service.pending_metric_rows() if row[0] > newest]


def clear_class(service, command: Command) -> int:
    """Delete every sample of one class; returns how many went."""
    store, label = service.store, command.args["label"]
    if store is None:
        raise CommandError("clear_class: the sample store is not open")
    name = service.definition.classes[label]
    deleted = store.delete_class(label)
    _log.info("class %r cleared: %d samples deleted (%s)", name, deleted, command.source or "command")
    service.events.publish("sample", label=label, cleared=deleted, **{"class": name})
    service.training_data_changed()
    return deleted
