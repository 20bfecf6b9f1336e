"""The service loop in-process, on simulated sources and gpiozero's mock pins.

Each test runs ``Service.run()`` in a thread (or, for SIGHUP, in the main thread), waits
with a generous deadline for what it wants to see, then stops the service. Nothing here
asserts how long anything takes.
"""

import errno
import json
import logging
import os
import signal
import threading
import time

import pytest
from running_service import DEADLINE, checkpoint_files, running, wait_for, write_config

from pi_backprop.exc import DataError, HardwareError
from pi_backprop.service import capture as capture_module
from pi_backprop.service import loop as service_module
from pi_backprop.service.config import load_config
from pi_backprop.service.loop import Service
from pi_backprop.service.sdnotify import Notifier
from pi_backprop.storage import checkpoint as checkpoint_module
from pi_backprop.storage.store import SampleStore

pytest.importorskip("gpiozero")

# -- LEDs on mock pins ------------------------------------------------------------------------

COLOURS = {(1.0, 0.6, 0.0): "starting", (0.0, 1.0, 0.0): "training", (1.0, 1.0, 1.0): "checkpoint",
           (1.0, 0.0, 0.0): "error"}


def colour_name(rgb):
    rgb = tuple(round(float(v), 2) for v in rgb)
    if rgb in COLOURS:
        return COLOURS[rgb]
    if rgb[0] == rgb[1] == 0.0 and rgb[2] > 0:
        return "collecting"      # the blue pulse, at any brightness
    return None                  # dark (between blinks) or half-way through an update


def seen_order(colours):
    """The states a poller saw, each shown for two polls or more, without repeats in a row."""
    colours = list(colours)
    steady = [c for i, c in enumerate(colours[1:], 1) if c is not None and c == colours[i - 1]]
    return [c for i, c in enumerate(steady) if i == 0 or c != steady[i - 1]]


def test_status_leds_on_mock_pins_go_from_starting_to_training_checkpoint_and_error(tmp_path):
    from pi_backprop.hardware import pins as pins_module

    config = write_config(tmp_path / "c.toml", lights={"kind": "rgb", "pins": [17, 27, 22]})
    seen_states, colours = [], []
    with running(config, tmp_path / "state", on_light=lambda state, text: seen_states.append(state)) as service:
        factory = pins_module._chosen
        red, green, blue = (factory.pin(n) for n in (17, 27, 22))
        stop_polling = threading.Event()

        def poll():      # what someone looking at the LED would see, every few milliseconds
            while not stop_polling.is_set():
                colours.append(colour_name((red.state, green.state, blue.state)))
                time.sleep(0.003)

        poller = threading.Thread(target=poll)
        poller.start()
        wait_for(lambda: service.trainer.last_checkpoint is not None, what="a checkpoint")
        wait_for(lambda: seen_order(colours)[-2:] == ["checkpoint", "training"], what="training again after the flash")
        failing = []

        def disk_full(*args, **kwargs):
            failing.append(1)
            raise DataError("cannot write the sample store: database or disk is full")
        service.store.add_sample = service.store.add_samples = disk_full   # the writer stores batches
        wait_for(lambda: seen_order(colours)[-1] == "error", what="the red error blink")
        stop_polling.set()
        poller.join()
    # Starting was shown before the poller could look: the pins' own history has it.
    assert red.states[1].state == 1.0 and round(green.states[1].state, 2) == 0.6   # yellow
    assert seen_states[:3] == ["starting", "collecting", "training"]
    assert seen_states[-1] == "idle"
    assert any(0.1 < s.state < 0.9 for s in blue.states)            # the collecting pulse fades
    order = seen_order(colours)
    # (the first checkpoint may come with the first burst: checkpoint_every_seconds has passed)
    wanted = ["collecting", "checkpoint", "training", "error"]
    it = iter(order)
    assert all(state in it for state in wanted), order              # in this order, others between
    assert failing and red.state == green.state == blue.state == 0   # LEDs off after close


# -- label buttons and predictions ------------------------------------------------------------

def test_label_buttons_on_mock_pins_label_what_was_shown_and_predictions_rotate(tmp_path):
    jsonl = tmp_path / "out" / "predictions.jsonl"
    config = write_config(tmp_path / "c.toml", labels={"pins": [5, 6, 12, 13]},
                          predict={"jsonl": str(jsonl), "jsonl_max_bytes": 10_000})
    handled = []
    with running(config, tmp_path / "state") as service:
        original = service._handle_sample
        service._handle_sample = lambda sample: handled.append(sample) or original(sample)
        wait_for(lambda: jsonl.with_name("predictions.jsonl.1").exists() and len(handled) >= 100,
                 what="a rotated predictions file")
        buttons = service.buttons
    labelled = [s for s in handled if s.label is not None]
    assert len(labelled) >= 0.9 * len(handled)
    assert all(s.label == s.shown for s in labelled)       # the held button said what was shown
    assert len(set(buttons.presses)) >= 3                  # the operator pressed real (mock) buttons
    records = [json.loads(line) for f in (jsonl.with_name("predictions.jsonl.1"), jsonl)
               for line in f.read_text().splitlines()]
    assert all(f.stat().st_size <= 10_000 for f in jsonl.parent.iterdir())
    assert len(records) >= 50 and {r["class"] for r in records} <= set(service.definition.classes)
    assert all(r["label"] in (None, 0, 1, 2, 3) and 0 <= r["confidence"] <= 1 for r in records)


# -- divergence -------------------------------------------------------------------------------

def test_divergence_rolls_back_lowers_lr_then_stops_training_but_keeps_predicting(tmp_path, caplog):
    config = write_config(tmp_path / "c.toml", training={"max_grad_norm": 0.001, "max_rollbacks": 3,
                                                         "lr_backoff": 0.5, "lr": 0.01})
    caplog.set_level(logging.INFO, logger="pi_backprop")
    states = []
    with running(config, tmp_path / "state", on_light=lambda state, text: states.append(state)) as service:
        wait_for(lambda: service.training_stopped, what="training to stop")
        predicted = service.reporter.count
        wait_for(lambda: service.reporter.count >= predicted + 20, what="predictions after the stop")
        assert service.thread.is_alive()
        assert service.trainer.step == 0 and service.trainer.optimizer.lr == pytest.approx(0.01 * 0.5 ** 3)
        assert "training stopped (diverged)" in service._status_text()
        assert service.lights.state == "error"
    messages = [r.getMessage() for r in caplog.records]
    rollbacks = [m for m in messages if "rolled back to the initial weights" in m]
    assert len(rollbacks) == 3 and "gradient norm" in rollbacks[0] and "rollback 3 of 3" in rollbacks[-1]
    assert any("training stopped after 3 rollbacks" in m for m in messages)
    assert checkpoint_files(tmp_path / "state") == []        # nothing diverged was written
    assert "error" in states


# -- failing parts ----------------------------------------------------------------------------

def test_a_failing_camera_is_retried_shown_on_the_leds_and_training_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(capture_module, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(capture_module, "MAX_BACKOFF", 0.05)
    reads = []
    real_open = service_module.open_source

    def flaky_open(*args, **kwargs):
        read, simulated = real_open(*args, **kwargs)

        def flaky_read():
            reads.append(len(reads))
            n = reads[-1]
            if n % 9 == 4 or 60 <= n < 75:        # now and then, and once a run of 15
                raise HardwareError("camera frame timed out (simulated)")
            return read()
        return flaky_read, simulated

    monkeypatch.setattr(service_module, "open_source", flaky_open)
    config = write_config(tmp_path / "c.toml", model={"name": "camera_cnn"},
                          source={"kind": "simulated-camera", "interval": 0.01})
    caplog.set_level(logging.INFO, logger="pi_backprop")
    states = []
    with running(config, tmp_path / "state", on_light=lambda state, text: states.append(state)) as service:
        wait_for(lambda: len(reads) > 80, what="captures past the failing run")
        step = service.trainer.step
        stored = service.store.stats().labelled
        wait_for(lambda: service.trainer.step >= step + 20 and service.store.stats().labelled > stored + 5,
                 what="training and storing after the failures")
    messages = [r.getMessage() for r in caplog.records]
    assert any("capture failed (1 in a row): camera frame timed out" in m for m in messages)
    assert any("capture works again after 15 failures" in m for m in messages)
    assert "error" in states and states.index("error") > states.index("collecting")


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_service_running(tmp_path, monkeypatch, caplog):
    config = write_config(tmp_path / "c.toml")
    caplog.set_level(logging.INFO, logger="pi_backprop")
    state = tmp_path / "state"
    with running(config, state) as service:
        wait_for(lambda: service.trainer.last_checkpoint is not None, what="a first checkpoint")
        good = service.trainer.last_checkpoint
        good_bytes = good.read_bytes()
        fsyncs, stores = [], []
        real_fsync = os.fsync

        def full_fsync(fd):      # the disk fills up while a checkpoint is written
            fsyncs.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def full_store(*args, **kwargs):
            stores.append(1)
            raise DataError("cannot write the sample store: database or disk is full")

        monkeypatch.setattr(checkpoint_module.os, "fsync", full_fsync)
        service.store.add_sample = service.store.add_samples = full_store   # the writer stores batches
        step = service.trainer.step
        wait_for(lambda: len(fsyncs) >= 2 and len(stores) >= 5, what="failed writes")
        wait_for(lambda: service.trainer.step >= step + 50, what="training on a full disk")
        assert service.thread.is_alive() and service.lights.state == "error"
        assert checkpoint_files(state)[-1] == good and good.read_bytes() == good_bytes
        assert not [p for p in (state / "checkpoints").iterdir() if p.name.startswith(".") and p.suffix != ".lock"
                    and p.name != ".lock"]                   # no temp file left behind
        monkeypatch.setattr(checkpoint_module.os, "fsync", real_fsync)   # space again
        del service.store.add_sample, service.store.add_samples
        wait_for(lambda: checkpoint_files(state)[-1] != good, what="a checkpoint once there is space")
    messages = [r.getMessage() for r in caplog.records]
    assert any("checkpoint not written" in m and "no space left on device" in m for m in messages)
    assert any("sample not stored: cannot write the sample store: database or disk is full" in m
               for m in messages)
    info = checkpoint_module.find_latest(state / "checkpoints").latest
    assert info.step == service.trainer.step            # the stop wrote the last one


# -- SIGHUP -----------------------------------------------------------------------------------

def test_sighup_applies_live_keys_reports_restart_keys_and_keeps_the_old_config_when_broken(tmp_path, caplog):
    path = write_config(tmp_path / "c.toml", labels={"pins": [5, 6, 12, 13], "mode": "hold"})
    caplog.set_level(logging.INFO, logger="pi_backprop")
    service = Service(load_config(path), config_path=path, simulate=True, state_dir=tmp_path / "state",
                      notifier=Notifier(environ={}), max_seconds=DEADLINE)
    failures = []

    def operator():
        try:
            wait_for(lambda: hasattr(service, "started"), what="the loop")
            write_config(path, labels={"pins": [5, 6, 12, 13], "mode": "press"}, training={"lr": 0.02},
                         source={"interval": 0.02}, service={"status_interval": 1.5}, model={"seed": 7})
            os.kill(os.getpid(), signal.SIGHUP)
            wait_for(lambda: service.config.training.lr == 0.02, what="the reload")
            path.write_text('[training]\nlr = "fast"\n')
            os.kill(os.getpid(), signal.SIGHUP)
            wait_for(lambda: any("config not reloaded" in r.getMessage() for r in caplog.records),
                     what="the refused reload")
        except BaseException as error:
            failures.append(error)
        finally:
            service.stop_event.set()

    helper = threading.Thread(target=operator)
    with service:
        helper.start()
        service.run()
    helper.join()
    assert not failures, failures
    assert service.trainer.optimizer.lr == 0.02 and service.buttons is not None
    assert service.buttons.mode == "press" and service.capture.interval == 0.02
    assert service.config.service.status_interval == 1.5 and service.config.model.seed == 7
    messages = [r.getMessage() for r in caplog.records]
    applied = next(m for m in messages if m.startswith("SIGHUP: applied"))
    assert all(key in applied for key in ("labels.mode", "source.interval", "training.lr", "service.status_interval"))
    assert any("model.seed changed but need a restart" in m for m in messages)
    refused = next(m for m in messages if "config not reloaded" in m)
    assert "training.lr" in refused and "\n" not in refused


def test_a_new_lr_on_sighup_lets_stopped_training_try_again(tmp_path):
    path = write_config(tmp_path / "c.toml", training={"max_grad_norm": 0.001, "max_rollbacks": 1})
    with running(path, tmp_path / "state") as service:
        wait_for(lambda: service.training_stopped, what="training to stop")
        write_config(path, training={"max_grad_norm": 1000.0, "max_rollbacks": 1, "lr": 0.005})
        service.commands.submit("reload", source="SIGHUP")   # what the SIGHUP handler does
        wait_for(lambda: service.trainer.step >= 20, what="training again")
        assert not service.training_stopped


# -- start-up errors --------------------------------------------------------------------------

@pytest.mark.parametrize("changes, args, fragment", [
    ({"training": {"learning_rate": 0.1}}, [], "training.learning_rate: unknown key"),
    ({"training": {"lr": -1}}, [], "training.lr: expected a number >= 1e-07"),
    ({"labels": {"pins": [5, 6, 12]}}, [], "labels.pins has 3 pins but model 'sensor_mlp' has 4 classes"),
    ({"model": {"name": "no_such_model"}}, [], "no_such_model"),
    ({"model": {"name": "camera_cnn"}, "source": {"kind": "camera"}}, [], "--simulate"),
    ({}, ["--state-dir", "/proc/no/such/dir"], "cannot create the state directory /proc/no/such/dir"),
    ({}, ["--until-accuracy", "2"], "--until-accuracy must be in (0, 1]"),
])
def test_start_up_mistakes_are_one_line_and_exit_2(tmp_path, capsys, changes, args, fragment):
    from pi_backprop.cli import main
    from pi_backprop.hardware import pins

    if "--simulate" in fragment and pins.pi_model() is not None:
        pytest.skip("a Raspberry Pi: the camera may be there")
    path = write_config(tmp_path / "c.toml", **changes)
    args = args if "--state-dir" in args else args + ["--state-dir", str(tmp_path / "state")]
    status = main(["run", "--config", str(path), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("pi-backprop run: error: ") and fragment in err[-1], err
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("keep, stored", [(True, True), (False, False)])
def test_unlabelled_samples_are_predicted_and_stored_only_with_keep_unlabelled(tmp_path, keep, stored):
    config = write_config(tmp_path / "c.toml", labels={"simulated": False}, store={"keep_unlabelled": keep})
    with running(config, tmp_path / "state") as service:
        wait_for(lambda: service.reporter.count >= 30, what="predictions")
        assert service.trainer.dataset is None and service.lights.state == "collecting"
    with SampleStore(tmp_path / "state" / "samples.db", readonly=True) as store:   # all stored at the stop
        counts = store.counts()
    assert set(counts) <= {None} and (counts.get(None, 0) >= 20) == stored


# -- checkpoint policy ---------------------------------------------------------------------------

@pytest.mark.parametrize("minimum, at_most", [(0.0, None), (3600.0, 0)])
def test_step_checkpoints_wait_for_the_minimum_interval(tmp_path, minimum, at_most):
    """checkpoint_every_steps is reached every burst here; min_checkpoint_seconds decides."""
    config = write_config(tmp_path / "c.toml", training={
        "checkpoint_every_steps": 5, "checkpoint_every_seconds": 3600, "min_checkpoint_seconds": minimum})
    written, stored = [], []
    with running(config, tmp_path / "state") as service:
        original = service._checkpoint_written
        service._checkpoint_written = lambda path: (written.append(path), original(path))
        service.events.subscribe(stored.append, "sample")
        # New samples keep coming (the step rule applies only then): several batches of them.
        wait_for(lambda: service.trainer.step >= 60 and len(stored) >= 200 and (at_most is not None
                                                                                or len(written) >= 4),
                 what="training steps and new samples")
    during_run = [path for path in written if path != written[-1]] if written else []
    if at_most is None:
        assert len(during_run) >= 3             # many bursts of 5 steps: a checkpoint after each
    else:
        assert len(during_run) <= at_most       # only the one written on stopping
        assert len(checkpoint_files(tmp_path / "state")) == 1


def test_an_explicit_backend_wins_over_the_config(tmp_path, backend):
    """`pi-backprop --backend X run`: model.backend in the config does not override X."""
    other = "numpy" if backend == "numba" else "numba"
    config = write_config(tmp_path / "c.toml", model={"name": "sensor_mlp", "backend": other})
    with Service(load_config(config), simulate=True, state_dir=tmp_path / "s", notifier=Notifier(environ={}),
                 backend_chosen=True):
        from pi_backprop.nn import get_backend
        assert get_backend() == backend


def test_store_bounds_failing_on_sighup_keep_the_service_running(tmp_path, monkeypatch, caplog):
    config = write_config(tmp_path / "c.toml")
    with running(config, tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step > 0, what="training")

        def locked(**kwargs):
            raise DataError("database is locked")
        monkeypatch.setattr(service.store, "set_limits", locked)
        write_config(config, store={"max_per_class": 50})
        with caplog.at_level(logging.WARNING, logger="pi_backprop"):
            service.commands.submit("reload", source="SIGHUP")
            wait_for(lambda: "store bounds not applied" in caplog.text, what="the warning")
        step = service.trainer.step
        wait_for(lambda: service.trainer.step > step, what="training after the reload")
