"""``pi-backprop predict`` on images, arrays and cameras, and the dependency-free PNG decoder."""

import json
import struct
import sys
import zlib

import numpy as np
import pytest
from cli_state import build_state, newest_model

from pi_backprop.cli import main
from pi_backprop.cli.images import decode_png, read_image
from pi_backprop.exc import DataError
from pi_backprop.hardware import simulated
from pi_backprop.training.inference import confidences


@pytest.fixture(scope="module")
def camera_state(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("camera")
    build_state(state_dir, "camera", steps=300)
    return state_dir


@pytest.fixture(scope="module")
def sensor_state(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("sensor")
    build_state(state_dir, "sensor", steps=100)
    return state_dir


@pytest.fixture
def no_pillow(monkeypatch):
    """Import of PIL fails, as on a Pi without python3-pil."""
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)


def run(capsys, *argv):
    status = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


# -- a PNG encoder for the tests: every filter type, every colour type --------------------------

def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter(kind, row, above, bpp):
    out = bytearray()
    for i, value in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b, c = above[i], (above[i - bpp] if i >= bpp else 0)
        predictor = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
        out.append((value - predictor) & 0xFF)
    return bytes(out)


def encode_png(rows, width, height, depth, colour, palette=None, interlace=0):
    """rows: uint8 (height, stride) packed samples; row y uses filter type y % 5."""
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    bpp = max(1, samples * depth // 8)
    raw, above = bytearray(), bytes(rows.shape[1])
    for y in range(height):
        row = rows[y].tobytes()
        raw += bytes([y % 5]) + _filter(y % 5, row, above, bpp)
        above = row

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))
    if palette is not None:
        data += chunk(b"PLTE", palette.tobytes())
    return data + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def _case(name, rng, height=7, width=11):
    """(png bytes, expected uint8 pixels) for one colour type / bit depth."""
    if name in ("grey8", "rgb8", "rgba8", "grey_alpha8"):
        colour, samples = {"grey8": (0, 1), "rgb8": (2, 3), "rgba8": (6, 4), "grey_alpha8": (4, 2)}[name]
        pixels = rng.integers(0, 256, (height, width, samples), dtype=np.uint8)
        expected = pixels[..., 0] if samples <= 2 else pixels[..., :3]
        return encode_png(pixels.reshape(height, -1), width, height, 8, colour), expected
    if name == "rgb16":
        pixels = rng.integers(0, 65536, (height, width, 3), dtype=np.uint16)
        return encode_png(pixels.astype(">u2").view(np.uint8).reshape(height, -1), width, height, 16, 2), \
            (pixels >> 8).astype(np.uint8)
    depth = {"grey1": 1, "grey4": 4, "palette2": 2, "palette8": 8}[name]
    values = rng.integers(0, 2 ** depth, (height, width), dtype=np.uint8)
    bits = ((values[..., None] >> np.arange(depth - 1, -1, -1)) & 1).astype(np.uint8).reshape(height, -1)
    rows = np.packbits(bits, axis=1)
    if name.startswith("palette"):
        palette = rng.integers(0, 256, (2 ** depth, 3), dtype=np.uint8)
        return encode_png(rows, width, height, depth, 3, palette), palette[values]
    return encode_png(rows, width, height, depth, 0), (values.astype(int) * 255 // (2 ** depth - 1)).astype(np.uint8)


CASES = ["grey8", "rgb8", "rgba8", "grey_alpha8", "rgb16", "grey1", "grey4", "palette2", "palette8"]


@pytest.mark.parametrize("name", CASES)
def test_png_decoder_undoes_every_filter(rng, name):
    data, expected = _case(name, rng)
    np.testing.assert_array_equal(decode_png(data), expected)


@pytest.mark.parametrize("name", ["grey8", "rgb8", "rgba8", "palette8"])
def test_pillow_and_the_builtin_decoder_agree(tmp_path, rng, monkeypatch, name):
    pytest.importorskip("PIL.Image")
    data, expected = _case(name, rng, height=13, width=17)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    with_pillow = read_image(path)
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    np.testing.assert_array_equal(read_image(path), expected)
    np.testing.assert_array_equal(with_pillow, expected)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:-20], "is truncated"),
    (lambda d: d[:30] + bytes([d[30] ^ 1]) + d[31:], "is damaged (CRC mismatch in chunk 'IHDR')"),
    (lambda d: d[:8] + b"\x00" * 8 + d[16:], "is damaged (CRC mismatch"),
], ids=["truncated", "bit-flip", "zeroed"])
def test_png_decoder_damage_is_a_one_line_data_error(rng, damage, message):
    data, _ = _case("rgb8", rng)
    with pytest.raises(DataError, match="^x.png ") as caught:
        decode_png(damage(data), "x.png")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_interlaced_png_needs_pillow(rng):
    data = encode_png(np.zeros((4, 4), np.uint8), 4, 4, 8, 0, interlace=1)
    with pytest.raises(DataError, match="is an interlaced PNG, which pi-backprop reads only with Pillow"):
        decode_png(data, "i.png")


# -- predict -----------------------------------------------------------------------------------

def _frame_png(tmp_path, label, seed):
    frame = simulated.render_frames([label], seed, (96, 72), ("empty", "circle", "hbar", "vbar"))[0]
    path = tmp_path / f"frame{label}.png"
    path.write_bytes(encode_png(frame.reshape(72, -1), 96, 72, 8, 2))
    return path


@pytest.mark.parametrize("label, name", [(1, "circle"), (2, "hbar"), (3, "vbar")])
def test_png_file_of_a_known_class(capsys, tmp_path, camera_state, no_pillow, label, name):
    status, out, err = run(capsys, "--state-dir", camera_state, _frame_png(tmp_path, label, seed=40 + label))
    assert status == 0 and err == ""
    first = out.splitlines()[0]
    assert first.startswith(f"{tmp_path}/frame{label}.png: {name} ")
    assert float(first.split()[-1].rstrip("%")) > 80
    assert out.splitlines()[1].split()[:2] == ["1.", name]
    assert len(out.splitlines()) == 5 and out.splitlines()[-1].startswith("(tiny_camera, ckpt-00000300.npz, step 300")


def test_npy_batch_matches_the_model(capsys, tmp_path, camera_state):
    x, _ = simulated.camera_dataset(5, 7, (1, 12, 12), ("empty", "circle", "hbar", "vbar"))
    np.save(tmp_path / "batch.npy", x)
    status, out, _ = run(capsys, "--state-dir", camera_state, tmp_path / "batch.npy", "--json", "--top", "4")
    assert status == 0
    records = [json.loads(line) for line in out.splitlines()]
    model, _ = newest_model(camera_state)
    expected = confidences(model.predict(x), "softmax_cross_entropy")
    classes = ["empty", "circle", "hbar", "vbar"]
    for i, record in enumerate(records):
        assert record["input"] == f"{tmp_path}/batch.npy[{i}]" and record["step"] == 300
        assert record["class"] == classes[int(expected[i].argmax())]
        assert record["unsure"] is False                  # no --min-confidence: never unsure
        got = {entry["class"]: entry["confidence"] for entry in record["top"]}
        np.testing.assert_allclose([got[c] for c in classes], expected[i], atol=1e-6)


def test_npy_raw_uint8_frame_goes_through_preprocessing(capsys, tmp_path, camera_state):
    frame = simulated.render_frames([2], 5, (64, 48), ("empty", "circle", "hbar", "vbar"))[0]
    np.save(tmp_path / "frame.npy", frame)
    status, out, _ = run(capsys, "--state-dir", camera_state, tmp_path / "frame.npy", "--json")
    assert status == 0
    assert json.loads(out)["class"] == "hbar"


def test_min_confidence_reports_the_inputs_below_it_unsure_and_still_lists_their_top_classes(
        capsys, tmp_path, camera_state):
    x, _ = simulated.camera_dataset(8, 11, (1, 12, 12), ("empty", "circle", "hbar", "vbar"))
    np.save(tmp_path / "batch.npy", x)
    model, _ = newest_model(camera_state)
    best = confidences(model.predict(x), "softmax_cross_entropy").max(axis=1)
    ordered = np.sort(best)
    widest = int(np.argmax(np.diff(ordered)))            # a threshold far from every confidence
    threshold = float(ordered[widest] + ordered[widest + 1]) / 2
    expected = best < threshold
    assert expected.any() and not expected.all()

    status, out, _ = run(capsys, "--state-dir", camera_state, tmp_path / "batch.npy", "--json",
                         "--min-confidence", threshold)
    assert status == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["unsure"] for r in records] == expected.tolist()
    np.testing.assert_allclose([r["confidence"] for r in records], best, atol=1e-6)   # the best guess stays

    status, out, _ = run(capsys, "--state-dir", camera_state, tmp_path / "batch.npy", "--min-confidence", threshold)
    assert status == 0
    lines = out.splitlines()
    for i, record in enumerate(records):
        at = lines.index(next(line for line in lines if line.startswith(f"{tmp_path}/batch.npy[{i}]: ")))
        guess = f"{record['class']} {100 * record['confidence']:.1f}%"
        assert lines[at] == f"{tmp_path}/batch.npy[{i}]: " + (f"unsure ({guess})" if expected[i] else guess)
        assert [line.split()[:2] for line in lines[at + 1:at + 4]] == [[f"{k}.", e["class"]]
                                                                       for k, e in enumerate(record["top"], 1)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_simulated_camera_capture(capsys, camera_state, seed):
    status, out, _ = run(capsys, "--state-dir", camera_state, "--camera", "--simulate", "--seed", seed, "--json")
    assert status == 0
    record = json.loads(out)
    assert record["input"] == "camera" and record["class"] == record["shown"] and record["confidence"] > 0.5


def test_mse_model_confidences_are_its_sigmoid_outputs(capsys, tmp_path, sensor_state):
    x, _ = simulated.sensor_dataset(1, 3, 16)
    np.save(tmp_path / "window.npy", x[0])
    status, out, _ = run(capsys, "--state-dir", sensor_state, tmp_path / "window.npy", "--json", "--top", "4")
    assert status == 0
    model, _ = newest_model(sensor_state)
    outputs = model.predict(x)[0]
    got = {entry["class"]: entry["confidence"] for entry in json.loads(out)["top"]}
    np.testing.assert_allclose([got[c] for c in simulated.SENSOR_CLASSES], outputs, atol=1e-6)
    assert 0 < outputs.min() and outputs.max() < 1   # sigmoid outputs, not a softmax (sum != 1)


def _pickled(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("args, message", [
    ([], "give either an image or .npy FILE, or --camera"),
    (["{t}/a.npy", "--camera"], "give either an image or .npy FILE, or --camera"),
    (["{t}/a.npy", "--simulate"], "--simulate and --seed go with --camera"),
    (["{t}/missing.png"], "{t}/missing.png: no such file"),
    (["{t}/bad.npy"], "{t}/bad.npy: array of shape (5, 5) does not fit the model: it takes (1, 12, 12), "
                      "a batch (N, 1, 12, 12) or a uint8 camera frame (H, W[, 3])"),
    (["{t}/pickled.npy"], "{t}/pickled.npy: holds pickled Python objects, refused (pickles can run code); "
     "save plain numeric arrays"),
    (["{t}/nan.npy"], "{t}/nan.npy: input 0 holds NaN or inf"),
    (["{t}/photo.jpg"], "{t}/photo.jpg is a JPEG, which needs Pillow: pip install pillow (on Raspberry Pi OS: "
                        "sudo apt install python3-pil); or convert it to PNG"),
    (["{t}/notes.txt"], "{t}/notes.txt is not a PNG image (and Pillow, which reads other formats, is not "
                        "installed: pip install pillow (on Raspberry Pi OS: sudo apt install python3-pil))"),
    (["{t}/a.npy", "--min-confidence", "1.5"], "--min-confidence must be between 0 and 1 (0.8 = 80%), got 1.5"),
    (["{t}/a.npy", "--min-confidence", "-0.1"], "--min-confidence must be between 0 and 1 (0.8 = 80%), got -0.1"),
    (["{t}/a.npy", "--min-confidence", "nan"], "--min-confidence must be between 0 and 1 (0.8 = 80%), got nan"),
], ids=["nothing", "both", "simulate-alone", "missing", "shape", "pickle", "nan", "jpeg", "text",
        "min-confidence-above-1", "min-confidence-below-0", "min-confidence-nan"])
def test_errors_are_one_line(capsys, tmp_path, camera_state, no_pillow, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((5, 5), np.float32))
    np.save(tmp_path / "nan.npy", np.full((1, 12, 12), np.nan, np.float32))
    _pickled(tmp_path / "pickled.npy")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    (tmp_path / "notes.txt").write_text("hello")
    status, out, err = run(capsys, "--state-dir", camera_state, *[a.format(t=tmp_path) for a in args])
    assert status == 2 and out == ""
    assert err == f"pi-backprop predict: error: {message.format(t=tmp_path)}\n"


def test_min_confidence_that_is_no_number_is_a_usage_error(capsys, camera_state):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--state-dir", str(camera_state), "a.npy", "--min-confidence", "high"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err == ("pi-backprop predict: error: argument --min-confidence: invalid float value: 'high' "
                   "(see pi-backprop predict --help)\n")


def test_pi_camera_missing_on_a_desktop(capsys, camera_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    status, _, err = run(capsys, "--state-dir", camera_state, "--camera")
    assert status == 2
    assert err.startswith("pi-backprop predict: error: picamera2 is not available (")
    assert "sudo apt install python3-picamera2" in err and err.count("\n") == 1


@pytest.mark.parametrize("content, fragment", [
    (lambda path: np.save(path, np.zeros((0, 32), np.float32)), "holds no inputs"),
    (lambda path: path.write_text("not numbers"), "is not a .npy file (its first bytes are neither"),
])
def test_unusable_npy_is_one_line(sensor_state, tmp_path, capsys, content, fragment):
    path = tmp_path / "input.npy"
    content(path)
    status, out, err = run(capsys, "--state-dir", sensor_state, path)
    assert status == 2 and fragment in err and len(err.splitlines()) == 1 and out == ""
