"""The trainer in-process: data order, bit-exact resume, settings across runs, divergence,
hooks, the directory lock, and the `train` command's output."""

import logging
import re

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop.cli import main
from pi_backprop.cli.train import Progress
from pi_backprop.exc import CheckpointError, ConfigError
from pi_backprop.storage import checkpoint as ckpt
from pi_backprop.training.datasets import open_dataset
from pi_backprop.training.trainer import DivergenceError, StepReport, Trainer

SENSOR = pb.load_definition("sensor_mlp")
DATA = open_dataset("sim:sensor?n=200", SENSOR)
TOTAL = 37


# The numpy backend: no JIT compile time; what is tested here is the same on both.
pytestmark = pytest.mark.usefixtures("numpy_backend")


def trainer(directory, **options):
    options = {"batch_size": 16, "checkpoint_every": 5, "eval_every": 10, **options}
    return Trainer(SENSOR, DATA, directory, **options)


def state(t):
    """Everything that must be bit-identical between runs."""
    return (t.step, t.optimizer.step_count, t.model.parameter_vector.tobytes(),
            tuple(b.tobytes() for b in t.optimizer.buffers.values()), t.optimizer.hyper())


def stop_at(step):
    def hook(report):
        if report.step == step:
            hook.trainer.stop_event.set()
    return hook


def test_data_order_is_a_function_of_seed_and_step(tmp_path):
    with trainer(None, seed=3) as a, trainer(None, seed=3) as b, trainer(None, seed=4) as c:
        per_epoch = len(DATA.train_index) // 16
        for step in (0, 1, per_epoch - 1, per_epoch, 5 * per_epoch + 2):
            assert (a.batch_indices(step) == b.batch_indices(step)).all()
        assert (a.batch_indices(0) != c.batch_indices(0)).any()
        epoch = np.concatenate([a.batch_indices(s) for s in range(per_epoch)])
        assert len(set(epoch.tolist())) == per_epoch * 16          # no repeats within an epoch
        assert set(epoch.tolist()) <= set(DATA.train_index.tolist())  # never a held-out sample


@pytest.mark.parametrize("options", [{"optimizer": "adam"}, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
                                     {"optimizer": "adam", "augment": {"time_shift": 2, "gain": 0.1, "noise": 0.05}}],
                         ids=["adam", "sgd-momentum", "augmented"])
def test_stopped_and_resumed_runs_are_bit_identical(tmp_path, options):
    with trainer(tmp_path / "straight", **options) as straight:
        straight.run(TOTAL)
        expected = state(straight)
    directory = tmp_path / "interrupted"
    for stop in (1, 7, 10, 23, 36):
        hook = stop_at(stop)
        with trainer(directory, hooks=[hook], **options) as t:
            hook.trainer = t
            result = t.run(TOTAL)
        assert result.stopped and result.step == stop
        assert result.checkpoint == directory / ckpt.checkpoint_name(stop)
    with trainer(directory, **options) as t:
        assert t.resumed_from.step == 36
        result = t.run(TOTAL)
        assert not result.stopped and state(t) == expected


def test_resume_after_losing_the_newest_checkpoints(tmp_path):
    """A power cut can leave the newest checkpoint damaged: resuming from an older one still ends
    bit-identical (the lost steps are simply redone)."""
    with trainer(tmp_path / "straight") as straight:
        straight.run(TOTAL)
        expected = state(straight)
    directory = tmp_path / "cut"
    with trainer(directory, keep=5) as t:
        t.run(22)
    (directory / "ckpt-00000022.npz").write_bytes(b"PK\x03\x04")
    (directory / ".ckpt-00000025.x1.tmp").write_bytes(b"half a write")
    with trainer(directory) as t:
        assert t.step == 20 and [p.name for p, _ in t.skipped] == ["ckpt-00000022.npz"]
        assert not list(directory.glob(".ckpt-*.tmp"))
        t.run(TOTAL)
        assert state(t) == expected


def test_hooks_get_every_step_and_metrics_at_evaluations(tmp_path):
    reports = []
    with trainer(tmp_path, hooks=[reports.append]) as t:
        t.run(20)
    assert [r.step for r in reports] == list(range(1, 21))
    assert [r.step for r in reports if r.metrics] == [10, 20]
    assert [r.checkpoint.name for r in reports if r.checkpoint] == [
        "ckpt-00000005.npz", "ckpt-00000010.npz", "ckpt-00000015.npz", "ckpt-00000020.npz"]
    metrics = reports[-1].metrics
    assert 0 <= metrics["eval_accuracy"] <= 1 and metrics["eval_samples"] == len(DATA.eval_index)
    assert np.isfinite(metrics["eval_loss"]) and np.isfinite(metrics["train_loss"])
    assert ckpt.verify_checkpoint(reports[-1].checkpoint).header["metrics"]["eval_step"] == 20


def test_settings_come_from_the_checkpoint_and_identity_changes_are_refused(tmp_path, caplog):
    with trainer(tmp_path, seed=5, lr=0.01) as t:
        t.run(5)
    with trainer(tmp_path) as t:         # nothing given: the run's own settings
        assert t.settings["seed"] == 5 and t.optimizer.lr == 0.01 and t.settings["batch_size"] == 16
    for option, value, message in [("seed", 6, "seed 6 differs from the run in .* \\(seed 5, ckpt-00000005.npz\\)"),
                                   ("batch_size", 8, "batch_size 8 differs"),
                                   ("optimizer", "sgd", "optimizer 'sgd' differs")]:
        with pytest.raises(ConfigError, match=message):
            trainer(tmp_path, **{option: value})
    with caplog.at_level(logging.WARNING, logger="pi_backprop"), trainer(tmp_path, lr=0.002) as t:
        assert t.optimizer.lr == 0.002
        assert t.warnings == ["lr changed from 0.01 (ckpt-00000005.npz) to 0.002"]
    assert "lr changed from 0.01" in caplog.text


def test_other_model_in_directory_is_refused(tmp_path):
    with trainer(tmp_path) as t:
        t.run(5)
    other = pb.ModelDefinition.from_dict(dict(SENSOR.to_dict(), layers=[{"type": "dense", "out_features": 4}]))
    with pytest.raises(ckpt.CheckpointRefused, match="different 'sensor_mlp' model"):
        Trainer(other, DATA, tmp_path)


def test_second_trainer_on_a_directory_is_refused(tmp_path):
    with trainer(tmp_path):
        with pytest.raises(CheckpointError, match=r"another pi-backprop process \(pid \d+\) is training into"):
            trainer(tmp_path)
    with trainer(tmp_path):   # released on close
        pass


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_raises_writes_nothing_bad_and_restores(tmp_path):
    with trainer(tmp_path, optimizer="sgd", lr=0.05) as t:
        t.run(10)
        good = t.model.parameter_vector.copy()
        t.optimizer.lr = 1e6
        with pytest.raises(DivergenceError, match=r"training diverged at step 1\d: loss is (nan|inf).*"
                                                  r"ckpt-00000010.npz\) is intact") as caught:
            t.run(40)
        assert caught.value.step > 10
        assert [p.name for p in ckpt.checkpoint_files(tmp_path)][0] == "ckpt-00000010.npz"
        t.optimizer.lr = 0.01
        info = t.restore()
        assert info.step == 10 and t.step == 10 and t.optimizer.lr == 0.01
        assert t.model.parameter_vector.tobytes() == good.tobytes()
        t.run(20)
        assert np.isfinite(t.model.parameter_vector).all()


def test_restore_to_a_step_goes_back_and_a_restart_resumes_there(tmp_path):
    with trainer(tmp_path / "straight", keep=10) as straight:
        straight.run(15)
        expected = state(straight)
    directory = tmp_path / "rolled"
    with trainer(directory, keep=10) as t:
        t.run(30)
        with pytest.raises(CheckpointError, match=r"no checkpoint at or before step 3 .*steps kept: 30, 25, 20"):
            t.restore(3)
        assert t.step == 30                                   # a refused roll back changes nothing
        info = t.restore(17)
        assert info.step == 15 and t.step == 15 and state(t) == expected
        assert [ckpt.step_of(p) for p in ckpt.checkpoint_files(directory)][0] == 15
    with trainer(directory, keep=10) as t:
        assert t.resumed_from.step == 15

def test_resuming_on_the_same_data_split_another_way_warns(tmp_path, caplog):
    from pi_backprop.training.datasets import Dataset

    first_half = np.arange(len(DATA.x)) < len(DATA.x) // 2
    other_split = Dataset.from_arrays(DATA.x, DATA.y, SENSOR, eval_mask=first_half)
    with Trainer(SENSOR, other_split, tmp_path, batch_size=16, checkpoint_every=5) as t:
        t.run(5)
    with caplog.at_level(logging.WARNING, logger="pi_backprop"), trainer(tmp_path) as t:
        assert t.step == 5
    assert "split differently" in caplog.text and f"{len(DATA.x) // 2} held out then" in caplog.text
    with trainer(tmp_path) as t:
        t.run(10)              # the next checkpoint records the new split
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pi_backprop"), trainer(tmp_path) as t:
        assert t.step == 10
    assert "split differently" not in caplog.text

def test_a_trainer_without_data_says_so_instead_of_failing_inside(tmp_path):
    with Trainer(SENSOR, None, tmp_path) as t:
        for action in (t.save_checkpoint, t.evaluate):
            with pytest.raises(ConfigError, match="no data yet"):
                action()
    assert not ckpt.checkpoint_files(tmp_path)

def test_gradient_norm_guard(tmp_path):
    with trainer(None, max_grad_norm=1e-9) as t:
        with pytest.raises(DivergenceError, match="gradient norm .* exceeds 1e-09"):
            t.run(3)


# -- the command ------------------------------------------------------------------------------


LINE = re.compile(r"^step (\d+)/60  loss \d+\.\d{4}  acc \d+\.\d%  (\d+\.\d|-) steps/s  ETA \S+$")


def test_train_command_plain_lines_and_resume(tmp_path, capsys):
    argv = ["train", "--model", "sensor_mlp", "--data", "sim:sensor?n=200", "--steps", "60",
            "--checkpoint-dir", str(tmp_path), "--checkpoint-every", "20", "--batch-size", "16"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training sensor_mlp (4,324 parameters) on sim:sensor?n=200 (")
    progress = [LINE.match(line) for line in lines[1:-1]]
    assert all(progress) and [int(m.group(1)) for m in progress] == [20, 40, 60]
    assert lines[-1].startswith("done: step 60 of 60") and lines[-1].endswith("ckpt-00000060.npz")
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"already at step 60 of 60 in {tmp_path}: nothing to do"


def test_train_command_user_errors_are_one_line_exit_2(tmp_path, capsys):
    base = ["train", "--model", "sensor_mlp", "--steps", "5", "--checkpoint-dir", str(tmp_path)]
    for extra, message in [(["--data", "nope.npz"], "does not exist"),
                           (["--data", "sim:sensor", "--batch-size", "0"], "batch_size must be a positive integer"),
                           (["--data", "sim:sensor", "--steps", "-1"], "--steps must be >= 0")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def test_progress_bar_on_a_terminal():
    import io
    stream = io.StringIO()
    progress = Progress(total_steps=10, first_step=0, stream=stream, is_tty=True, out=io.StringIO())
    for step in range(1, 11):
        progress(StepReport(step, 10, 0.5, {"eval_accuracy": 0.75} if step == 10 else None, None, 0.1 * step, step))
    progress.finish()
    text = stream.getvalue()
    assert text.startswith("\rstep 1/10 [##......................] loss 0.5000 acc - ")
    assert "\rstep 10/10 [########################] loss 0.5000 acc 75.0%" in text
    assert text.endswith("\n")


def test_bursts_without_end_of_run_match_one_run_and_checkpoint_only_periodically(tmp_path):
    with trainer(tmp_path / "straight") as straight:
        straight.run(TOTAL)
        expected = state(straight)
    directory = tmp_path / "bursts"
    written = []
    with trainer(directory, hooks=[lambda r: r.checkpoint and written.append(r.step)], keep=10) as t:
        while t.step < TOTAL:
            result = t.run(min(t.step + 7, TOTAL), end_of_run=False)
            assert not result.stopped
        assert state(t) == expected
    assert written == [5, 10, 15, 20, 25, 30, 35]


@pytest.mark.parametrize("stop", [3, 7])
def test_camera_model_resumes_bit_identically_on_each_backend(tmp_path, backend, stop):
    camera = pb.load_definition("camera_cnn")
    data = open_dataset("sim:camera?n=40", camera)

    def make(directory, **options):
        return Trainer(camera, data, directory, batch_size=4, checkpoint_every=4, **options)

    with make(tmp_path / "straight") as straight:
        straight.run(10)
        expected = state(straight)
    hook = stop_at(stop)
    with make(tmp_path / "stopped", hooks=[hook]) as t:
        hook.trainer = t
        assert t.run(10).step == stop
    with make(tmp_path / "stopped") as t:
        t.run(10)
        assert state(t) == expected


SMALL_DATA = pb.ModelDefinition.from_dict({
    "name": "small_cnn", "input_shape": [1, 28, 28], "classes": ["empty", "circle", "square"],
    "training": {"optimizer": "adamw", "lr": 0.003}, "augment": {"shift": 2, "noise": 0.05, "brightness": 0.1},
    "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "relu"},
               {"type": "avgpool2d", "pool_size": 2}, {"type": "dropout", "p": 0.25},
               {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1}, {"type": "relu"},
               {"type": "maxpool2d", "pool_size": 2}, {"type": "globalavgpool2d"}, {"type": "dropout", "p": 0.5},
               {"type": "dense", "out_features": 3}]})


@pytest.mark.parametrize("stop", [3, 7])
def test_dropout_and_adamw_resume_bit_identically_on_each_backend(tmp_path, backend, stop):
    """The masks are a function of (seed, step): a run stopped and resumed draws the ones an
    uninterrupted run draws, and AdamW's state and decay come back from the checkpoint."""
    data = open_dataset("sim:camera?n=40", SMALL_DATA)

    def make(directory, **options):
        return Trainer(SMALL_DATA, data, directory, batch_size=4, checkpoint_every=4, **options)

    with make(tmp_path / "straight") as straight:
        straight.run(10)
        expected = state(straight)
        assert straight.optimizer.kind == "adamw" and straight.optimizer.weight_decay == 0.01  # PyTorch's default
    with make(tmp_path / "other", seed=1) as other:
        other.run(10)
        assert state(other) != expected
    hook = stop_at(stop)
    with make(tmp_path / "stopped", hooks=[hook]) as t:
        hook.trainer = t
        assert t.run(10).step == stop
    with make(tmp_path / "stopped") as t:
        assert t.resumed_from.step == stop
        t.run(10)
        assert state(t) == expected


def test_augmentation_changes_the_training_batches_only_and_is_kept_in_the_checkpoint(tmp_path, caplog):
    with Trainer(SMALL_DATA, open_dataset("sim:camera?n=40", SMALL_DATA), tmp_path / "run", batch_size=4,
                 checkpoint_every=5) as t:
        x, y = t.training_batch(3)
        raw = t.dataset.x[t.batch_indices(3)]
        assert x.shape == raw.shape and not np.array_equal(x, raw)
        np.testing.assert_array_equal(y, t.dataset.y[t.batch_indices(3)])
        np.testing.assert_array_equal(x, t.training_batch(3)[0])
        before = t.evaluate()
        np.testing.assert_array_equal(t.dataset.x[t.batch_indices(3)], raw)   # the data themselves untouched
        assert t.evaluate() == before                                         # evaluation sees them as they are
        t.run(5)
    header = ckpt.find_latest(tmp_path / "run", SMALL_DATA).latest.header
    assert header["training"]["augment"] == {"shift": 2, "noise": 0.05, "brightness": 0.1}
    with caplog.at_level(logging.WARNING), Trainer(SMALL_DATA, None, tmp_path / "run", augment={}) as t:
        assert not t.augment
    assert any(r.getMessage().startswith("augment changed from {'brightness': 0.1") and r.getMessage().endswith("to {}")
               for r in caplog.records)
    with pytest.raises(ConfigError, match="augment.time_shift: it applies to sensor windows"):
        Trainer(SMALL_DATA, None, tmp_path / "other", augment={"time_shift": 1})
    assert not (tmp_path / "other").exists()


def test_adamw_takes_weight_decay_but_not_momentum(tmp_path):
    with Trainer(SENSOR, DATA, None, optimizer="adamw", weight_decay=0.2) as t:
        assert t.optimizer.weight_decay == 0.2 and t.optimizer.hyper()["weight_decay"] == 0.2
    with pytest.raises(ConfigError, match="momentum applies to the sgd optimizer, not adamw"):
        Trainer(SENSOR, DATA, None, optimizer="adamw", momentum=0.9)


def test_a_zero_learning_rate_is_refused_before_the_directory_is_touched(tmp_path):
    with pytest.raises(ConfigError, match="lr must be > 0"):
        trainer(tmp_path / "run", lr=0.0)
    assert not (tmp_path / "run").exists()


def test_reconfigure_checks_every_value_before_changing_any(tmp_path):
    from pi_backprop.exc import ConfigError
    definition = pb.load_definition("sensor_mlp")
    with Trainer(definition, None, tmp_path / "ckpt", optimizer="sgd", lr=0.1, batch_size=8) as trainer:
        for bad in ({"batch_size": 16, "keep": 0}, {"batch_size": 16, "lr": "0.1"}, {"batch_size": 16, "momentum": -1},
                    {"batch_size": 16, "max_grad_norm": 0}):
            with pytest.raises(ConfigError):
                trainer.reconfigure(**bad)
            assert trainer.settings["batch_size"] == 8 and trainer.optimizer.lr == 0.1
        trainer.reconfigure(lr=0.05, momentum=0.5, batch_size=16, keep=2, max_grad_norm=None)
        assert (trainer.optimizer.lr, trainer.optimizer.momentum) == (0.05, 0.5)
        assert (trainer.settings["batch_size"], trainer.keep, trainer.max_grad_norm) == (16, 2, None)
        assert trainer.unsaved_steps == 0


def test_set_augment_changes_the_batches_from_then_on_and_refuses_a_bad_table_whole(tmp_path):
    with Trainer(SMALL_DATA, open_dataset("sim:camera?n=40", SMALL_DATA), tmp_path / "run", batch_size=4,
                 checkpoint_every=5) as t:
        raw = t.dataset.x[t.batch_indices(3)]
        assert t.set_augment({}) == {} and np.array_equal(t.training_batch(3)[0], raw)
        with pytest.raises(ConfigError, match="augment.gain: it applies to sensor windows"):
            t.set_augment({"shift": 1, "gain": 0.1})
        assert not t.augment                                   # nothing changed
        assert t.set_augment(None) == SMALL_DATA.augment      # None: the definition's own
        assert not np.array_equal(t.training_batch(3)[0], raw)
        assert t.set_augment({"hflip": True}) == {"hflip": True}
        t.run(5)
    assert ckpt.find_latest(tmp_path / "run", SMALL_DATA).latest.header["training"]["augment"] == {"hflip": True}
