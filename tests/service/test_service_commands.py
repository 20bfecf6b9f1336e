"""Clients of the running service: commands in, events out, on simulated parts.

Everything here goes through ``service.commands`` and ``service.events`` only, as the web
page and MQTT will; the store and checkpoint files are then read as a user would.
"""

import json
import logging
import signal
import threading

import numpy as np
import pytest
from running_service import DEADLINE, checkpoint_files, running, wait_for, write_config

from pi_backprop.exc import CheckpointError, CheckpointWriteError, CommandError
from pi_backprop.storage import checkpoint as ckpt
from pi_backprop.storage.store import SampleStore

pytest.importorskip("gpiozero")


class Recorder:
    """Every event of a bus, kept in order; ``kinds()`` and ``of(kind)`` read them."""

    def __init__(self, bus):
        self.events, self._lock = [], threading.Lock()
        bus.subscribe(self._got)

    def _got(self, event):
        with self._lock:
            self.events.append(event)

    def of(self, kind):
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def states(self):
        return [e.data["state"] for e in self.of("state")]


def stored(state_dir):
    with SampleStore(state_dir / "samples.db", readonly=True) as store:
        return store.load_arrays("all")[1].tolist()


def test_pause_stops_training_resume_goes_on_and_clients_see_both(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        record = Recorder(service.events)
        wait_for(lambda: service.trainer.step > 0, what="training")
        assert service.commands.submit("pause", source="web").result(DEADLINE) == "paused"
        wait_for(lambda: service.state == "paused", what="the paused state")
        step, samples = service.trainer.step, len(record.of("prediction"))
        wait_for(lambda: len(record.of("prediction")) > samples + 20, what="predictions while paused")
        assert service.trainer.step == step                       # capturing goes on, training does not
        assert "training paused at step" in service._status_text()
        service.commands.submit("resume", source="web").result(DEADLINE)
        wait_for(lambda: service.trainer.step > step, what="training after resume")
    states = record.states()
    assert "paused" in states and states[states.index("paused") + 1] == "training"


def test_commanded_labels_are_what_gets_stored(tmp_path):
    config = write_config(tmp_path / "c.toml", labels={"simulated": False}, store={"keep_unlabelled": True},
                          training={"enabled": False})
    with running(config, tmp_path / "state") as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("sample")) >= 3, what="unlabelled samples")
        service.commands.submit("label_start", source="web", label=service.definition.classes[2]).result(0)
        wait_for(lambda: sum(e.data["label"] == 2 for e in record.of("sample")) >= 5, what="labelled samples")
        service.commands.submit("label_stop", source="web").result(0)
        count = len(record.of("sample"))
        wait_for(lambda: len(record.of("sample")) >= count + 5, what="samples after label_stop")
        service.commands.submit("label_next", source="buttons", label=1).result(0)
        wait_for(lambda: any(e.data["label"] == 1 for e in record.of("sample")), what="the one label_next sample")
    samples = record.of("sample")
    labels = [e.data["label"] for e in samples]
    assert labels.count(1) == 1 and labels.count(2) >= 5 and labels[:3] == [None, None, None]
    assert {e.data["class"] for e in samples if e.data["label"] == 2} == {service.definition.classes[2]}
    last_two = max(i for i, label in enumerate(labels) if label == 2)
    assert labels[last_two + 2:].count(2) == 0                   # label_stop ended it (one may be in flight)
    assert sorted(stored(tmp_path / "state")) == sorted(label for label in labels if label is not None)


def test_on_a_simulated_source_the_class_being_taught_is_what_it_shows(tmp_path):
    # A person holding "triangle" on the page holds a triangle in front of the camera: the
    # simulated camera shows what is being labelled, and random things while nobody labels.
    config = write_config(tmp_path / "c.toml", labels={"simulated": False}, store={"keep_unlabelled": True},
                          training={"enabled": False}, model={"name": "camera_cnn"},
                          source={"kind": "simulated-camera", "interval": 0.01})
    handled = []
    with running(config, tmp_path / "state") as service:
        original = service._handle_sample
        service._handle_sample = lambda sample: handled.append(sample) or original(sample)
        wait_for(lambda: len(handled) >= 30, what="unlabelled samples")
        service.commands.submit("label_start", source="web", label="triangle").result(0)
        wait_for(lambda: sum(s.label is not None for s in handled) >= 20, what="labelled samples")
        service.commands.submit("label_stop", source="web").result(0)
        count = len(handled)
        wait_for(lambda: len(handled) >= count + 30, what="samples after label_stop")
    triangle = service.definition.classes.index("triangle")
    labelled = [s for s in handled if s.label is not None]
    assert {s.label for s in labelled} == {triangle}
    assert all(s.shown == triangle for s in labelled[1:])    # the first may have been captured as it began
    assert len({s.shown for s in handled[:30]}) > 3 and len({s.shown for s in handled[-30:]}) > 3


def test_the_simulated_operator_steps_aside_while_a_person_labels_and_comes_back_after(tmp_path, caplog):
    # The demo: its operator labels all the time; a newcomer holding a tile on the page
    # labels instead, and sees the thing they hold, with no "held together" conflict.
    config = write_config(tmp_path / "c.toml", training={"enabled": False}, model={"name": "camera_cnn"},
                          source={"kind": "simulated-camera", "interval": 0.01})
    handled = []
    with caplog.at_level(logging.WARNING, logger="pi_backprop"), running(config, tmp_path / "state") as service:
        original = service._handle_sample
        service._handle_sample = lambda sample: handled.append(sample) or original(sample)
        wait_for(lambda: len(handled) >= 40, what="the operator's samples")
        service.commands.submit("label_start", source="web", label="triangle").result(0)
        start = len(handled)
        wait_for(lambda: len(handled) >= start + 40, what="samples while the person holds")
        service.commands.submit("label_stop", source="web").result(0)
        stop = len(handled)
        wait_for(lambda: len(handled) >= stop + 40, what="the operator's samples again")
    triangle = service.definition.classes.index("triangle")
    held = handled[start + 2:stop - 2]          # one capture may be in flight at each end
    assert held and all(s.label == s.shown == triangle for s in held)
    for turn in (handled[:40], handled[stop + 2:]):
        assert len({s.label for s in turn}) > 3 and all(s.label == s.shown for s in turn if s.label is not None)
    assert "held together" not in caplog.text


def holds(dataset, x):
    return dataset is not None and bool(np.any(np.all(dataset.x.reshape(len(dataset.x), -1) == x.reshape(-1), axis=1)))


def test_delete_sample_removes_it_from_the_store_file_and_from_what_the_trainer_learns(tmp_path):
    # At its bounds the store's count stays the same as samples come and go: the trainer
    # must notice the deletion all the same.
    # Slow enough captures that the newest sample outlives a refresh of the training data
    # (~6 s for a class's 30 at 5 a second) before the bounds drop it.
    config = write_config(tmp_path / "c.toml", store={"max_per_class": 30}, source={"interval": 0.05})
    with running(config, tmp_path / "state") as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("sample")) >= 130 and service.trainer.dataset is not None,
                 what="a full store and training")
        service.commands.submit("pause", source="test").result(DEADLINE)
        labelled = [e.data["id"] for e in record.of("sample") if e.data["label"] is not None]
        doomed = labelled[-1]
        x = np.frombuffer(service.store._db.execute("SELECT data FROM samples WHERE id = ?", (doomed,)).fetchone()[0],
                          dtype=np.float32)
        service.commands.submit("resume", source="test").result(DEADLINE)
        wait_for(lambda: holds(service.trainer.dataset, x), what="the sample in the training data")
        assert service.commands.submit("delete_sample", source="web", id=doomed).result(DEADLINE) is True
        assert service.commands.submit("delete_sample", source="web", id=doomed).result(DEADLINE) is False
        wait_for(lambda: not holds(service.trainer.dataset, x), what="the trainer to let go of the deleted sample")
    with SampleStore(tmp_path / "state" / "samples.db", readonly=True) as store:
        ids = [row[0] for row in store._db.execute("SELECT id FROM samples")]
    assert doomed not in ids and len(ids) >= 20
    assert [e.data for e in record.of("sample") if e.data.get("deleted")] == [{"id": doomed, "deleted": True}]


def test_roll_back_to_a_step_restores_it_sets_newer_files_aside_and_a_restart_resumes_there(tmp_path):
    config = write_config(tmp_path / "c.toml", training={"checkpoint_every_steps": 10, "min_checkpoint_seconds": 0,
                                                          "keep": 20})
    state_dir = tmp_path / "state"
    with running(config, state_dir) as service:
        record = Recorder(service.events)
        wait_for(lambda: len(checkpoint_files(state_dir)) >= 4, what="four checkpoints")
        service.commands.submit("pause", source="test").result(DEADLINE)
        steps = sorted(ckpt.step_of(p) for p in checkpoint_files(state_dir))
        target = steps[1]
        with pytest.raises(CheckpointError, match="no checkpoint at or before step 0"):
            service.commands.submit("roll_back", source="web", step=0).result(DEADLINE)
        assert service.commands.submit("roll_back", source="web", step=target + 1).result(DEADLINE) == target
        assert service.trainer.step == target
        kept = sorted(ckpt.step_of(p) for p in checkpoint_files(state_dir))
        assert kept == steps[:2]
        aside = sorted(ckpt.step_of(p) for p in ckpt.checkpoint_files(state_dir / "checkpoints" / ckpt.SET_ASIDE))
        assert aside == steps[2:]
        rollback = record.of("rollback")[-1].data
        assert rollback["step"] == target and rollback["automatic"] is False and "web" in rollback["reason"]
    with running(config, state_dir) as service:
        assert service.trainer.resumed_from.step == target


def test_a_checkpoint_on_command_and_its_event(tmp_path):
    config = write_config(tmp_path / "c.toml", training={"checkpoint_every_seconds": 3600})
    with running(config, tmp_path / "state") as service:
        record = Recorder(service.events)
        wait_for(lambda: service.trainer.step > 0, what="training")
        service.commands.submit("pause", source="test").result(DEADLINE)
        path = service.commands.submit("checkpoint", source="web").result(DEADLINE)
        assert ckpt.verify_checkpoint(path).step == service.trainer.step
        assert record.of("checkpoint")[-1].data == {"path": path, "step": service.trainer.step}
        assert service.commands.submit("checkpoint", source="web").result(DEADLINE) is None   # nothing new


def test_a_checkpoint_command_that_cannot_write_says_so(tmp_path, monkeypatch):
    config = write_config(tmp_path / "c.toml", training={"checkpoint_every_seconds": 3600})
    with running(config, tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step > 0, what="training")
        service.commands.submit("pause", source="test").result(DEADLINE)

        def disk_full():
            raise CheckpointWriteError("no space left on device (28)", 28)

        monkeypatch.setattr(service.trainer, "save_checkpoint", disk_full)
        with pytest.raises(CommandError, match=r"^checkpoint not written: no space left on device \(28\)$"):
            service.commands.submit("checkpoint", source="web").result(DEADLINE)
        monkeypatch.undo()


def test_the_training_data_follow_a_full_store(tmp_path):
    """At its bounds every new sample replaces an old one: the count stays, the data change."""
    config = write_config(tmp_path / "c.toml", store={"max_per_class": 5})
    with running(config, tmp_path / "state") as service:
        wait_for(lambda: service.store.class_counts("all").sum() == 20 and service.trainer.dataset is not None,
                 what="a full store and training")
        first = service.trainer.dataset
        again = []     # the trainer's dataset is None for a moment while it is read again
        wait_for(lambda: (d := service.trainer.dataset) is not None and d is not first and not again.append(d),
                 what="the training data read again")
        assert len(again[0].y) == 20


def test_sighup_while_stopping_is_ignored_not_an_error(tmp_path, caplog):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step > 0, what="training")
        service.commands.close()           # as _stop() does before the final checkpoint
        with caplog.at_level(logging.INFO, logger="pi_backprop"):
            service._on_sighup(signal.SIGHUP, None)
    assert "SIGHUP while stopping: not reloaded" in caplog.text


def test_every_event_is_plain_json_and_the_main_kinds_are_published(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        record = Recorder(service.events)
        wait_for(lambda: record.of("metrics") and record.of("checkpoint") and record.of("status"),
                 what="metrics, a checkpoint and a status line")
        commands = service.commands
        commands.submit("delete_sample", source="web", id=record.of("sample")[0].data["id"]).result(DEADLINE)
        commands.submit("reload", source="web").result(DEADLINE)
        commands.submit("roll_back", source="web").result(DEADLINE)
        service._part_failed("disk", "a test's failure")
        wait_for(lambda: record.of("rollback") and record.of("reload") and record.of("failure"), what="more kinds")
    for event in record.events:
        assert json.loads(json.dumps(event.as_dict(), allow_nan=False))["kind"] == event.kind
    prediction = record.of("prediction")[-1].data
    assert set(prediction) == {"index", "class", "confidence", "unsure", "scores", "label", "step", "time"}
    assert len(prediction["scores"]) == len(service.definition.classes)
    assert record.states()[-1] == "stopping"
    assert {e.kind for e in record.events} >= {"state", "lights", "sample", "prediction", "metrics", "checkpoint",
                                               "rollback", "failure", "reload", "status"}
    numbers = [e.number for e in record.events]
    assert len(set(numbers)) == len(numbers)


def test_commands_after_stop_are_refused_with_one_line(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step > 0, what="training")
        service.commands.submit("stop", source="web").result(DEADLINE)
        service.thread.join(DEADLINE)
        with pytest.raises(CommandError, match="^pause: the service has stopped$"):
            service.commands.submit("pause", source="web")
    assert service.result["steps"] > 0


def test_a_second_ctrl_c_forces_the_service_out(tmp_path):
    """The first SIGINT asks for a clean stop (the final checkpoint); a second one, while that
    goes on, raises KeyboardInterrupt at once, as ``train`` does. The handlers are the ones the
    service installed in this (the main) thread."""
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        handler = signal.getsignal(signal.SIGINT)
        service.commands.submit("pause", source="test").result(DEADLINE)   # nothing runs on meanwhile
        handler(signal.SIGINT, None)
        assert service.stop_event.is_set()
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)   # a SIGTERM after it is no force
    assert signal.getsignal(signal.SIGINT) is not handler        # restored once the service closed
