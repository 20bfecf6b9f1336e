"""The service spares the SD card: without new samples it checkpoints only by the clock, it
rests once it has trained enough on what it has, and it stores its metrics in batches.
Real parts: the store and checkpoint files on disk."""

import contextlib
import logging
import sqlite3

import numpy as np
import pytest
from running_service import checkpoint_files, running, wait_for, write_config

from pi_backprop.hardware import simulated
from pi_backprop.modeldef import load_definition
from pi_backprop.storage import checkpoint as ckpt
from pi_backprop.storage.store import SampleStore

pytest.importorskip("gpiozero")


def filled_state(tmp_path, samples=200):
    state = tmp_path / "state"
    state.mkdir()
    definition = load_definition("sensor_mlp")
    x, y = simulated.sensor_dataset(samples, 0, definition.input_shape[0], definition.classes)
    with SampleStore(state / "samples.db") as store:
        store.set_class_names(definition.classes)
        store.add_samples(x, y, source="test")
    return state, definition


def metric_rows(state):
    with contextlib.closing(sqlite3.connect(f"file:{state / 'samples.db'}?mode=ro", uri=True)) as db:
        return db.execute("SELECT count(*) FROM metrics").fetchone()[0]


def test_without_new_samples_checkpoints_follow_the_clock_not_the_steps(tmp_path):
    state, _ = filled_state(tmp_path)
    config = write_config(tmp_path / "c.toml", labels={"simulated": False},
                          training={"checkpoint_every_steps": 10, "min_checkpoint_seconds": 0,
                                    "checkpoint_every_seconds": 3600, "rest_after_epochs": 0})
    with running(config, state) as service:
        wait_for(lambda: service.trainer.step > 300, what="training")
        assert checkpoint_files(state) == []                # 300 steps, no checkpoint by the step rule
        assert metric_rows(state) == 0                      # kept in memory, stored in a batch
    assert metric_rows(state) >= 1                          # ... at the stop
    assert len(checkpoint_files(state)) == 1                # the stop's


def test_training_rests_after_enough_epochs_and_wakes_for_new_samples(tmp_path, caplog):
    state, definition = filled_state(tmp_path)
    config = write_config(tmp_path / "c.toml", labels={"simulated": False},
                          training={"rest_after_epochs": 20, "checkpoint_every_seconds": 3600,
                                    "min_checkpoint_seconds": 2})
    with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, state) as service:
        wait_for(lambda: service.state == "resting", what="the rest")
        step = service.trainer.step
        # saved once min_checkpoint_seconds since training began allow it
        wait_for(lambda: service.trainer.unsaved_steps == 0, what="the rest's checkpoint")
        files = checkpoint_files(state)
        assert files and ckpt.step_of(files[-1]) == step
        assert step * 16 / len(service.trainer.dataset.train_index) >= 20
        assert "resting until new samples come" in service._status_text()
        wait_for(lambda: service.keeper.labelled() == 200, what="a status pass")
        assert service.trainer.step == step and checkpoint_files(state) == files   # nothing more written
        with SampleStore(state / "samples.db") as store:             # a user imports more samples
            x, y = simulated.sensor_dataset(40, 1, definition.input_shape[0], definition.classes)
            store.add_samples(x, y, source="import")
        wait_for(lambda: service.trainer.step > step, what="training again")
        assert service.state == "training"
    assert any("resting until new samples come" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage().startswith("new samples: training again") for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)
    assert np.isfinite(service.result["accuracy"])


def test_write_every_seconds_gathers_samples_in_memory_and_a_reload_changes_it(tmp_path):
    state = tmp_path / "state"
    slow = {"source": {"kind": "simulated-sensor", "interval": 0.2}}   # 5 a second: under a full batch
    config = write_config(tmp_path / "c.toml", store={"write_every_seconds": 600}, **slow)
    with running(config, state) as service:
        wait_for(lambda: service.writer.waiting >= 5, what="samples gathered")
        assert len(service.store) == 0                       # none written yet: the batch gathers
        write_config(config, store={"write_every_seconds": 0}, **slow)
        service.commands.submit("reload", source="test").result(60)
        wait_for(lambda: service.writer.waiting == 0 and len(service.store) >= 5, what="the batch stored")
        stored = len(service.store)
        wait_for(lambda: len(service.store) > stored, what="the next sample stored at once")
        assert service.writer.waiting == 0
