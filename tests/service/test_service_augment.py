"""``training.augment`` through the running service: the Trainer it makes trains with the
config's table, its checkpoints record it, a run without the key goes back to the model
definition's table, a reload applies a new one, and a table that does not fit the model
stops the start with one line."""

import numpy as np
import pytest
from running_service import DEADLINE, checkpoint_files, running, wait_for, write_config

from pi_backprop.exc import ConfigError
from pi_backprop.modeldef import load_definition
from pi_backprop.storage import checkpoint as checkpoint_module

pytest.importorskip("gpiozero")

OVERRIDE = {"time_shift": 3, "gain": 0.25}   # sensor_mlp takes windows: the sensor keys


def newest_header(state):
    return checkpoint_module.find_latest(state / "checkpoints").latest.header


def test_the_service_trains_with_the_configs_table_and_its_checkpoint_records_it(tmp_path):
    path = write_config(tmp_path / "c.toml", training={"augment": OVERRIDE})
    with running(path, tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step >= 10, what="training")
    trainer = service.trainer
    assert trainer.augment.to_table() == OVERRIDE
    x, y = trainer.training_batch(4)
    raw = trainer.dataset.x[trainer.batch_indices(4)]
    assert x.shape == raw.shape and not np.array_equal(x, raw)   # what was trained on is augmented
    assert checkpoint_files(tmp_path / "state")                  # the stop wrote one
    assert newest_header(tmp_path / "state")["training"]["augment"] == OVERRIDE


def test_without_the_key_a_resumed_run_goes_back_to_the_definitions_table(tmp_path):
    path = write_config(tmp_path / "c.toml", training={"augment": OVERRIDE})
    with running(path, tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step >= 5, what="training")
    write_config(path)   # the key removed
    with running(path, tmp_path / "state") as service:
        assert service.trainer.resumed_from is not None
        assert service.trainer.augment.to_table() == load_definition("sensor_mlp").augment
        step = service.trainer.step
        wait_for(lambda: service.trainer.step > step, what="training")
    assert newest_header(tmp_path / "state")["training"]["augment"] == load_definition("sensor_mlp").augment
    write_config(path, training={"augment": {}})   # {} = off
    with running(path, tmp_path / "state") as service:
        assert not service.trainer.augment


def test_a_reload_applies_a_new_table_and_refuses_one_that_does_not_fit(tmp_path):
    path = write_config(tmp_path / "c.toml", training={"augment": OVERRIDE})
    with running(path, tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step >= 5, what="training")
        write_config(path, training={"augment": {"noise": 0.1}})
        result = service.commands.submit("reload", source="SIGHUP").result(DEADLINE)   # what SIGHUP does
        assert result == {"applied": ["training.augment"], "restart": []}
        assert service.trainer.augment.to_table() == {"noise": 0.1}
        step = service.trainer.step
        wait_for(lambda: service.trainer.step > step, what="training after the reload")
        write_config(path, training={"augment": {"shift": 2}})   # an image key: not for this model
        with pytest.raises(ConfigError) as caught:
            service.commands.submit("reload", source="SIGHUP").result(DEADLINE)
        assert service.trainer.augment.to_table() == {"noise": 0.1}
        assert service.config.training.augment == {"noise": 0.1}
    message = str(caught.value)
    assert message.startswith("config not reloaded, the running one stays: ")
    assert "training.augment.shift: it applies to images" in message and "\n" not in message
    assert newest_header(tmp_path / "state")["training"]["augment"] == {"noise": 0.1}


def test_a_sensor_key_for_a_camera_model_stops_the_start_with_one_line(tmp_path, capsys):
    from pi_backprop.cli import main

    path = write_config(tmp_path / "c.toml", model={"name": "camera_cnn"}, source={"kind": "simulated-camera"},
                        training={"augment": {"shift": 2, "time_shift": 4}})
    status = main(["run", "--config", str(path), "--simulate", "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"pi-backprop run: error: {path}: training.augment.time_shift: it applies to sensor "
                             "windows, and this model's input is an image; known keys: shift, hflip,")
    assert not (tmp_path / "state").exists()   # refused before anything was opened or created
