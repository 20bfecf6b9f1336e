"""``pi-backprop train --augment`` / ``--no-augment``: the table trained with is the one the
summary line names and the checkpoint records; bad input is one line and exit status 2."""

import shlex

import pytest

from pi_backprop.cli import build_parser, main
from pi_backprop.cli.train import augment_text, parse_augment, resume_command
from pi_backprop.modeldef import load_definition
from pi_backprop.storage import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("numpy_backend")   # no JIT compile: the options are what is tested

BASE = ["train", "--model", "sensor_mlp", "--data", "sim:sensor?n=100", "--batch-size", "16",
        "--checkpoint-every", "10"]


def train(capsys, directory, steps, *extra):
    try:
        status = main([*BASE, "--steps", str(steps), "--checkpoint-dir", str(directory), *extra])
    except SystemExit as error:   # argparse's own usage errors
        status = error.code
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def recorded(directory):
    return ckpt.find_latest(directory).latest.header["training"]["augment"]


def test_augment_option_is_trained_with_named_in_the_summary_and_recorded(tmp_path, capsys):
    status, lines, err = train(capsys, tmp_path, 10, "--augment", "time_shift=2, gain=0.1,noise=0.02")
    assert status == 0 and err == ""
    assert ", seed 0, augment time_shift=2 gain=0.1 noise=0.02; steps 0 -> 10," in lines[0], lines[0]
    assert recorded(tmp_path) == {"time_shift": 2, "gain": 0.1, "noise": 0.02}
    # Resumed without the option: the checkpoint's table goes on.
    status, lines, _ = train(capsys, tmp_path, 20)
    assert status == 0 and "augment time_shift=2 gain=0.1 noise=0.02; steps 10 -> 20" in lines[1]
    # --no-augment turns it off (a change from the checkpoint's: warned, honoured).
    status, lines, err = train(capsys, tmp_path, 30, "--no-augment")
    assert status == 0 and "augment changed from" in err
    assert ", no augmentation; steps 20 -> 30" in lines[1] and recorded(tmp_path) == {}


def test_without_options_the_models_table_is_used(tmp_path, capsys):
    status, lines, _ = train(capsys, tmp_path, 5)
    assert status == 0 and f", {augment_text(load_definition('sensor_mlp').augment)}; steps" in lines[0]


def test_a_stopped_run_says_how_to_resume_with_the_same_option(tmp_path):
    for extra in (["--augment", "gain=0.2,noise=0.01"], ["--no-augment"]):
        args = build_parser().parse_args([*BASE, "--steps", "5", "--checkpoint-dir", str(tmp_path), *extra])
        assert shlex.split(resume_command(args))[-len(extra):] == extra


def test_parse_augment_reads_numbers_and_booleans():
    assert parse_augment("shift=2,noise=0.02,hflip=true,rotate=1e1") == {
        "shift": 2, "noise": 0.02, "hflip": True, "rotate": 10.0}
    assert parse_augment("hflip=False") == {"hflip": False}


@pytest.mark.parametrize("extra, message", [
    (["--augment", "shift=2"], "--augment: augment.shift: it applies to images, and this model's input is a window "
                               "of 32 values; known keys: time_shift, gain, noise"),
    (["--augment", "gain=2"], "--augment: augment.gain must be a number from 0 to 0.99, got 2"),
    (["--augment", "time_shift=1.5"], "--augment: augment.time_shift must be a whole number >= 0, got 1.5"),
    (["--augment", "gain=lots"], "--augment: gain=lots: expected a number or true/false"),
    (["--augment", "gain=0.1,gain=0.2"], "--augment: gain is given twice"),
    (["--augment", "gain=0.1,"], "--augment: expected KEY=VALUE[,KEY=VALUE...] (e.g. shift=2,noise=0.02), "
                                 "got 'gain=0.1,'"),
    (["--augment", "noise=nan"], "--augment: augment.noise must be a number from 0 to 10, got nan"),
    (["--augment", "gain=0.1", "--no-augment"], "argument --no-augment: not allowed with argument --augment"),
])
def test_bad_augment_options_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    status, lines, err = train(capsys, tmp_path / "run", 5, *extra)
    assert status == 2 and lines == []
    assert err.startswith("pi-backprop train: error: " + message) and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()   # refused before anything was written
