"""``pi-backprop report``: readable PNGs from a state directory (learning curves, confusion
matrix, samples, augmented samples), or a one-line reason for each one skipped."""

import struct
import sys

import pytest
from cli_state import build_state

from pi_backprop.cli import main
from pi_backprop.cli.images import decode_png
from pi_backprop.cli.plots import INSTALL_HINT

try:
    import matplotlib  # noqa: F401
    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False
# Only the pictures need it; the install hint and the errors are tested without it too.
needs_matplotlib = pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib (the plot extra) is not installed")


def run(capsys, *argv):
    status = main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@needs_matplotlib
@pytest.mark.parametrize("kind", ["camera", "sensor"])
def test_three_pictures_of_the_expected_size(capsys, tmp_path, kind):
    build_state(tmp_path, kind, steps=100)
    status, out, err = run(capsys, "--state-dir", tmp_path, "--per-class", 5)
    assert status == 0 and err == ""
    report = tmp_path / "report"
    names = ["learning_curves.png", "confusion_matrix.png", "samples.png"]
    assert out.splitlines() == [
        "augmented samples skipped: no augmentation in use (ckpt-00000100.npz has none)",
        *[f"wrote {report / name}" for name in names]]
    # Sizes follow from plots.py's figure sizes at 100 dpi: 2 panels; 4 classes; 4 rows x 5 columns.
    sizes = {name: png_size(report / name) for name in names}
    assert sizes == {"learning_curves.png": (1000, 400), "confusion_matrix.png": (540, 440),
                     "samples.png": (750, 580)}
    for name in names:
        pixels = decode_png((report / name).read_bytes()).astype(float)
        assert pixels.std() > 10, f"{name} is nearly blank"


@needs_matplotlib
def test_out_folder_and_before_any_training(capsys, tmp_path):
    build_state(tmp_path / "state", "camera", train=False)
    status, out, _ = run(capsys, "--state-dir", tmp_path / "state", "--out", tmp_path / "pictures")
    assert status == 0
    assert out.splitlines() == [
        "no training history in the store yet: learning curves skipped",
        f"confusion matrix skipped: no checkpoint folder {tmp_path}/state/checkpoints: train first "
        "(pi-backprop run or pi-backprop train), or give --state-dir DIR or --checkpoint FILE_OR_DIR",
        "augmented samples skipped: no checkpoint yet to read the augmentation in use from; give --model NAME "
        "(its [augment] table) or --augment KEY=VALUE,...",
        f"wrote {tmp_path}/pictures/samples.png"]
    assert png_size(tmp_path / "pictures" / "samples.png") == (1140, 580)
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["samples.png"]


def test_without_matplotlib_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    build_state(tmp_path, "sensor", train=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, out, err = run(capsys, "--state-dir", tmp_path)
    assert status == 2 and out == ""
    assert err == f"pi-backprop report: error: {INSTALL_HINT}\n"
    assert "pip install 'pi-backprop[plot]'" in err and "python3-matplotlib" in err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("argv, message", [
    (["--state-dir", "{t}"], "no sample store at {t}/samples.db: give the service's --state-dir "
                             "(e.g. /var/lib/pi-backprop)"),
    (["--state-dir", "{t}", "--per-class", "0"], "--per-class must be between 1 and 50, got 0"),
])
def test_errors_are_one_line(capsys, tmp_path, argv, message):
    status, out, err = run(capsys, *[a.format(t=tmp_path) for a in argv])
    assert status == 2 and out == ""
    assert err == f"pi-backprop report: error: {message.format(t=tmp_path)}\n"


# -- augmented_samples.png --------------------------------------------------------------------

AUGMENT = {"camera": {"shift": 2, "brightness": 0.3, "noise": 0.05}, "sensor": {"time_shift": 3, "gain": 0.3}}


@needs_matplotlib
@pytest.mark.parametrize("kind, size", [("camera", (880, 580)), ("sensor", (700, 700))])
def test_augmented_samples_with_the_checkpoints_table(capsys, tmp_path, kind, size):
    build_state(tmp_path, kind, steps=100, augment=AUGMENT[kind])
    status, out, err = run(capsys, "--state-dir", tmp_path)
    assert status == 0 and err == ""
    path = tmp_path / "report" / "augmented_samples.png"
    assert out.splitlines()[-1] == f"wrote {path}" and "skipped" not in out
    # 4 samples: images in a row each, the stored one and 5 versions; windows in a panel each.
    assert png_size(path) == size
    assert decode_png(path.read_bytes()).astype(float).std() > 10


@needs_matplotlib
def test_augmented_samples_before_any_training_with_augment_or_model(capsys, tmp_path):
    build_state(tmp_path, "camera", train=False)
    status, out, _ = run(capsys, "--state-dir", tmp_path, "--augment", "shift=2,hflip=true,noise=0.02")
    assert status == 0 and out.splitlines()[-1] == f"wrote {tmp_path / 'report' / 'augmented_samples.png'}"
    assert png_size(tmp_path / "report" / "augmented_samples.png") == (880, 580)
    # A shipped model for other frames: said in one line, the other pictures are still drawn.
    (tmp_path / "report" / "augmented_samples.png").unlink()
    status, out, _ = run(capsys, "--state-dir", tmp_path, "--model", "camera_cnn")
    assert status == 0
    assert "augmented samples skipped: model camera_cnn takes inputs of shape (1, 28, 28), the store holds " \
           "(1, 12, 12)" in out.splitlines()
    assert not (tmp_path / "report" / "augmented_samples.png").exists()


@pytest.mark.parametrize("augment, message", [
    ("time_shift=2", "--augment: augment.time_shift: it applies to sensor windows, and this model's input is an "
                     "image; known keys: shift,"),
    ("shift=two", "--augment: shift=two: expected a number or true/false"),
    ("shift", "--augment: expected KEY=VALUE[,KEY=VALUE...] (e.g. shift=2,noise=0.02), got 'shift'"),
])
def test_a_bad_augment_is_one_line(capsys, tmp_path, augment, message):
    build_state(tmp_path, "camera", train=False)
    if not HAVE_MATPLOTLIB:   # the check comes after the one for matplotlib
        pytest.skip("matplotlib (the plot extra) is not installed")
    status, out, err = run(capsys, "--state-dir", tmp_path, "--augment", augment)
    assert status == 2 and out == ""
    assert err.startswith(f"pi-backprop report: error: {message}") and err.count("\n") == 1, err
