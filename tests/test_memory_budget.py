"""Memory bombs in small files: each refused before it is allocated, in one line, whatever
reads it. Real files: a TOML with a huge layer, a checkpoint whose valid header names one, a
zip bomb and an .npz whose header claims terabytes, PNG files of huge images (both decoders).
Allocation is measured with tracemalloc (numpy reports its arrays to it)."""

import io
import json
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from pi_backprop import budget
from pi_backprop.cli import images, main
from pi_backprop.exc import CheckpointRefused, ConfigError, DataError, ModelDefinitionError
from pi_backprop.modeldef import ModelDefinition, load_definition
from pi_backprop.storage import checkpoint as ckpt
from pi_backprop.storage.store import read_npz

SMALL = 20_000_000      # bytes a refusal may allocate at most (the budget is 256 MB)


@pytest.fixture(autouse=True)
def default_budget(monkeypatch):
    monkeypatch.delenv(budget.ENV_VAR, raising=False)
    monkeypatch.setattr(budget, "_limit_mb", None)
    monkeypatch.setattr(budget, "explicit", False)


def peak_while(call):
    """(what ``call`` raised, the peak bytes traced meanwhile)."""
    tracemalloc.start()
    try:
        call()
    except Exception as error:     # the refusal under test
        raised = error
    else:
        raised = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak


def dense(units, inputs=32):
    return {"name": "bomb", "input_shape": [inputs], "classes": ["a", "b"],
            "layers": [{"type": "dense", "out_features": units}, {"type": "relu"},
                       {"type": "dense", "out_features": 2}]}


def test_the_shipped_models_fit_the_default_budget_with_room_to_spare():
    for name in ("sensor_mlp", "camera_cnn"):
        assert load_definition(name).memory_needed() < budget.limit_bytes() / 10


@pytest.mark.parametrize("units", [10**9, 3 * 10**6])
def test_a_model_definition_too_large_is_refused_before_allocating(units):
    raised, peak = peak_while(lambda: ModelDefinition.from_dict(dense(units), source="bomb.toml"))
    assert isinstance(raised, ModelDefinitionError), raised
    message = str(raised)
    assert message.startswith("bomb.toml: model 'bomb' would need ") and "more than the memory budget of" in message
    assert "--memory-budget" in message and "\n" not in message
    assert peak < SMALL, peak


def test_the_budget_can_be_raised_and_lowered():
    ModelDefinition.from_dict(dense(200_000))            # ~100 MB to train: fits 256 MB
    budget.set_limit(64)
    with pytest.raises(ModelDefinitionError, match="memory budget of 67.1 MB"):
        ModelDefinition.from_dict(dense(200_000))
    budget.set_limit(500, from_command_line=True)
    budget.set_limit(64)                                  # a config file does not override the command line
    assert budget.limit_mb() == 500
    with pytest.raises(ConfigError, match="whole number of megabytes"):
        budget.set_limit(0, from_command_line=True)


def test_a_checkpoint_whose_valid_header_names_a_huge_model_is_refused_cheaply(tmp_path):
    definition = load_definition("sensor_mlp")
    model = definition.build(seed=0)
    from pi_backprop.nn.optim import Adam
    path = ckpt.save_checkpoint(tmp_path, model, Adam(model), 1)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = json.loads(np.load(io.BytesIO(members["header.npy"])).tobytes())
    header["model"]["layers"][0]["out_features"] = 3 * 10**6      # a 56 kB file naming 2 GB
    header["sha256"] = ckpt.header_digest(header)
    text = io.BytesIO()
    np.lib.format.write_array(text, np.frombuffer(json.dumps(header).encode(), np.uint8))
    members["header.npy"] = text.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    raised, peak = peak_while(lambda: ckpt.verify_checkpoint(path))
    assert isinstance(raised, CheckpointRefused), raised
    assert "would need" in str(raised) and "memory budget" in str(raised)
    assert peak < SMALL, peak


def npy_header(shape, descr="<f4"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def zip_bomb(path, elements):
    """An .npz whose x inflates from a few hundred kB to ``elements`` float32 zeros."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(npy_header((elements // 32, 32)))
            zeros = bytes(1 << 20)
            for _ in range(elements * 4 // len(zeros)):
                member.write(zeros)
        archive.writestr("y.npy", _npy_bytes(np.zeros(elements // 32, np.int64)[:10]))
        archive.writestr("class_names.npy", _npy_bytes(np.array(["a", "b"])))


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_before_it_inflates(tmp_path):
    path = tmp_path / "bomb.npz"
    zip_bomb(path, 200_000_000)                   # 800 MB of zeros in a small file
    assert path.stat().st_size < 2_000_000
    raised, peak = peak_while(lambda: read_npz(path))
    assert isinstance(raised, DataError), raised
    assert str(raised).startswith(f"{path}: its arrays would need ")
    assert peak < SMALL, peak


def test_an_npz_that_claims_terabytes_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "claims.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy_header((2**40, 32)))     # 116 TiB declared, nothing behind it
        archive.writestr("y.npy", _npy_bytes(np.zeros(3, np.int64)))
        archive.writestr("class_names.npy", _npy_bytes(np.array(["a", "b"])))
    raised, peak = peak_while(lambda: read_npz(path))
    assert isinstance(raised, DataError) and "would need" in str(raised) and peak < SMALL
    assert main(["train", "--model", "sensor_mlp", "--data", str(path), "--steps", "1",
                 "--checkpoint-dir", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "would need" in err and "TB of memory" in err


def huge_png(path, side):
    """A grey PNG of ``side`` x ``side`` black pixels: a few kB that decode to side² bytes."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    packer = zlib.compressobj(9)
    row = bytes(side + 1)                          # filter byte 0, then the pixels
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(images.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [9000, 7000])
def test_a_huge_image_is_refused_by_either_decoder_before_decoding(tmp_path, side):
    path = huge_png(tmp_path / "huge.png", side)
    assert path.stat().st_size < 200_000
    readers = {"ours": lambda: images.decode_png(path.read_bytes(), str(path))}
    try:
        import PIL.Image  # noqa: F401
        readers["pillow"] = lambda: images.read_image(path)
    except ImportError:
        pass
    for name, read in readers.items():
        raised, peak = peak_while(read)
        assert isinstance(raised, DataError), (name, raised)
        assert f"a {side}x{side} image is too large to read within the memory budget" in str(raised), name
        assert peak < SMALL, (name, peak)


def test_an_image_a_camera_takes_is_read(tmp_path):
    path = huge_png(tmp_path / "photo.png", 3000)           # 9 MP, as a camera module's still
    assert images.decode_png(path.read_bytes(), str(path)).shape == (3000, 3000)
