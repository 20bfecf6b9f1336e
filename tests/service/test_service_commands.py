"""Clients of the running service: commands in, events out, on simulated parts.

Everything here goes through ``service.commands`` and ``service.events`` only, as the web
page and MQTT will; the store and checkpoint files are then read as a user would.
"""

import json
import threading

import pytest
from running_service import DEADLINE, checkpoint_files, running, wait_for, write_config

from pi_backprop.exc import CheckpointError, CommandError
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
        assert service.commands.submit("pause", source="web").result(DEADLINE) in ("training", "paused")
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


def test_delete_sample_removes_it_from_the_store_file(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("sample")) >= 5, what="stored samples")
        doomed = record.of("sample")[2].data["id"]
        assert service.commands.submit("delete_sample", source="web", id=doomed).result(DEADLINE) is True
        assert service.commands.submit("delete_sample", source="web", id=doomed).result(DEADLINE) is False
    with SampleStore(tmp_path / "state" / "samples.db", readonly=True) as store:
        ids = [row[0] for row in store._db.execute("SELECT id FROM samples")]
    assert doomed not in ids and len(ids) >= 4
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
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        record = Recorder(service.events)
        wait_for(lambda: service.trainer.step > 0, what="training")
        service.commands.submit("pause", source="test").result(DEADLINE)
        path = service.commands.submit("checkpoint", source="web").result(DEADLINE)
        if path is None:      # a periodic checkpoint may have caught the last step already
            assert not service.trainer.unsaved_steps
        else:
            assert ckpt.verify_checkpoint(path).step == service.trainer.step
            assert record.of("checkpoint")[-1].data == {"path": path, "step": service.trainer.step}
        assert service.commands.submit("checkpoint", source="web").result(DEADLINE) is None   # nothing new


def test_every_event_is_plain_json_and_the_main_kinds_are_published(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        record = Recorder(service.events)
        wait_for(lambda: record.of("metrics") and record.of("checkpoint") and record.of("status"),
                 what="metrics, a checkpoint and a status line")
    for event in record.events:
        assert json.loads(json.dumps(event.as_dict(), allow_nan=False))["kind"] == event.kind
    prediction = record.of("prediction")[-1].data
    assert set(prediction) == {"index", "class", "confidence", "scores", "label", "step", "time"}
    assert len(prediction["scores"]) == len(service.definition.classes)
    assert record.states()[-1] == "stopping"
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
