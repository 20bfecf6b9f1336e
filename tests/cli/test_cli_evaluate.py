"""``pi-backprop evaluate`` on a real state directory, against an independent computation."""

import re

import numpy as np
import pytest
from cli_state import build_state, newest_model

from pi_backprop.cli import main
from pi_backprop.storage.store import SampleStore
from pi_backprop.training.datasets import open_dataset


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("state")
    # Few steps: an imperfect model, so the confusion matrix has off-diagonal counts to check.
    definition = build_state(state_dir, "camera", steps=40)
    return state_dir, definition


def run(capsys, *argv):
    status = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def printed_matrix(out, classes):
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s*\d+ \S", line)]
    assert [row[1] for row in rows] == list(classes)
    return np.array([[int(v) for v in row[2:]] for row in rows])


def test_store_validation_split_matches_independent_computation(capsys, state):
    state_dir, definition = state
    status, out, err = run(capsys, "--state-dir", state_dir)
    assert status == 0 and err == ""
    model, step = newest_model(state_dir)
    with SampleStore(state_dir / "samples.db", readonly=True) as store:
        x, y = store.load_arrays("val")
    predicted = model.predict(x).argmax(axis=1)
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (y, predicted), 1)
    assert step == 40
    assert "ckpt-00000040.npz (step 40," in out.splitlines()[0]
    assert f"validation split: {len(y)} of 240 samples" in out
    assert f"accuracy {np.mean(predicted == y):.4f} on {len(y)} samples" in out
    np.testing.assert_array_equal(printed_matrix(out, definition.classes), expected)
    assert 0 < np.trace(expected) < len(y)          # the check above compared a real mix


@pytest.mark.parametrize("split", ["train", "all"])
def test_splits_of_the_store(capsys, state, split):
    state_dir, definition = state
    dataset = open_dataset(state_dir / "samples.db", definition)
    index = {"train": dataset.train_index, "all": np.arange(len(dataset))}[split]
    model, _ = newest_model(state_dir)
    accuracy = np.mean(model.predict(dataset.x[index]).argmax(axis=1) == dataset.y[index])
    status, out, _ = run(capsys, "--state-dir", state_dir, "--split", split)
    assert status == 0
    assert f"accuracy {accuracy:.4f} on {len(index)} samples" in out


def test_simulated_data_and_an_older_checkpoint_file(capsys, state):
    state_dir, definition = state
    older = state_dir / "checkpoints" / "ckpt-00000040.npz"
    status, out, _ = run(capsys, "--checkpoint", older, "--data", "sim:camera?n=60&seed=9", "--split", "all")
    assert status == 0
    assert out.splitlines()[0].startswith(f"model tiny_camera from {older} (step 40,")
    assert "data sim:camera?n=60&seed=9, all samples: 60 of 60 samples" in out
    assert printed_matrix(out, definition.classes).sum() == 60


def test_damaged_newest_checkpoint_is_skipped(capsys, tmp_path, state):
    state_dir, _ = state
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    good = (state_dir / "checkpoints" / "ckpt-00000040.npz").read_bytes()
    (folder / "ckpt-00000040.npz").write_bytes(good)
    (folder / "ckpt-00000090.npz").write_bytes(good[: len(good) // 2])
    status, out, _ = run(capsys, "--checkpoint", folder, "--data", state_dir / "samples.db")
    assert status == 0
    assert out.splitlines()[0].startswith("skipped damaged ckpt-00000090.npz: ")
    assert "(step 40," in out.splitlines()[1]


@pytest.mark.parametrize("make_args, message", [
    (lambda s, t: ["--state-dir", t],
     "no checkpoint folder {t}/checkpoints: train first (pi-backprop run or pi-backprop train), "
     "or give --state-dir DIR or --checkpoint FILE_OR_DIR"),
    (lambda s, t: ["--checkpoint", t / "missing.npz"],
     "checkpoint {t}/missing.npz does not exist: give a ckpt-*.npz file or its folder"),
    (lambda s, t: ["--checkpoint", s / "checkpoints"],
     "no sample store at {home}/samples.db: give --state-dir DIR or --data DATA"),
    (lambda s, t: ["--state-dir", s, "--data", "sim:sensor"],
     "sim:sensor gives vectors, but model 'tiny_camera' takes images (1, 12, 12); use sim:camera"),
    (lambda s, t: ["--state-dir", s, "--data", "sim:camera?n=3"],
     "the validation split of sim:camera?n=3 is empty (3 samples, too few to hold any out): use --split all"),
    (lambda s, t: ["--state-dir", s, "--data", t / "x.csv"],
     "data '{t}/x.csv' is not understood; give a .npz file (arrays x, y), a sample store (.db, .sqlite, "
     ".sqlite3), sim:sensor or sim:camera"),
], ids=["no-checkpoint", "missing-file", "no-store", "wrong-data", "empty-split", "unknown-data"])
def test_errors_are_one_line(capsys, tmp_path, monkeypatch, state, make_args, message):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    status, out, err = run(capsys, *make_args(state[0], tmp_path))
    assert status == 2 and out == ""
    expected = message.format(t=tmp_path, home=tmp_path / "xdg" / "pi-backprop")
    assert err == f"pi-backprop evaluate: error: {expected}\n"
