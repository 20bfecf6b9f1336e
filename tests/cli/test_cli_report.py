"""``pi-backprop report``: three readable PNGs from a state directory, or a one-line reason."""

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
    assert out.splitlines() == [f"wrote {report / name}" for name in names]
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
