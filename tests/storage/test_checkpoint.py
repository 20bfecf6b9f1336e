"""Checkpoint files: round trip, the documented hash, damage, malicious files, disk full,
durability order, pruning, and the `pi-backprop checkpoint` command."""

import errno
import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop.cli import main
from pi_backprop.exc import CheckpointError
from pi_backprop.storage import checkpoint as ckpt


def trained(model_name="sensor_mlp", optimizer="adam", seed=0, steps=3):
    """A model and optimizer with non-trivial state after a few steps (numpy backend)."""
    definition = pb.load_definition(model_name)
    model = definition.build(seed=seed)
    opt = pb.Adam(model, lr=1e-3) if optimizer == "adam" else pb.SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    loss = definition.make_loss()
    for _ in range(steps):
        x = rng.random((4,) + definition.input_shape, dtype=np.float32)
        model.train_step(x, rng.integers(0, len(definition.classes), 4), loss, opt)
    return definition, model, opt


# The numpy backend: no JIT compile time; what is tested here is the same on both.
pytestmark = pytest.mark.usefixtures("numpy_backend")


@pytest.fixture
def saved(tmp_path):
    definition, model, opt = trained()
    path = ckpt.save_checkpoint(tmp_path, model, opt, 3, metrics={"train_loss": 1.25})
    return path, definition, model, opt


def rewrite(path, header_changes=None, arrays=None, fix_hash=True):
    """Rebuild a checkpoint with a changed header and/or arrays, hashes recomputed (a crafted
    file: intact as far as hashes go, so only the content checks can refuse it)."""
    with zipfile.ZipFile(path) as archive:
        members = {name[:-4]: archive.read(name) for name in archive.namelist()}
    header = json.loads(np.load(io.BytesIO(members.pop("header"))).tobytes())
    for name, array in (arrays or {}).items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=True)
        members[name] = buffer.getvalue()
        header["arrays"][name] = {"dtype": array.dtype.str, "shape": list(array.shape)}
    for name, data in members.items():
        header["arrays"][name]["sha256"] = hashlib.sha256(data).hexdigest()
    header.update(header_changes or {})
    if fix_hash:
        header["sha256"] = ckpt.header_digest(header)
    text = io.BytesIO()
    np.lib.format.write_array(text, np.frombuffer(json.dumps(header).encode(), np.uint8))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
        archive.writestr("header.npy", text.getvalue())


# -- round trip and format --------------------------------------------------------------------


@pytest.mark.parametrize("model_name, optimizer", [("sensor_mlp", "adam"), ("sensor_mlp", "sgd"),
                                                   ("camera_cnn", "sgd")])
def test_round_trip_restores_every_bit(tmp_path, model_name, optimizer):
    definition, model, opt = trained(model_name, optimizer)
    path = ckpt.save_checkpoint(tmp_path, model, opt, 3, training={"seed": 0}, metrics={"eval_accuracy": 0.5})
    assert path.name == "ckpt-00000003.npz"
    fresh = definition.build(seed=99)
    fresh_opt = type(opt)(fresh, lr=0.5)
    info = ckpt.verify_checkpoint(path)
    ckpt.load_into(info, fresh, fresh_opt)
    assert fresh.parameter_vector.tobytes() == model.parameter_vector.tobytes()
    for name, buffer in opt.buffers.items():
        assert fresh_opt.buffers[name].tobytes() == buffer.tobytes()
    assert fresh_opt.step_count == opt.step_count == 3
    assert fresh_opt.hyper() == opt.hyper()
    assert info.header["training"] == {"seed": 0} and info.header["metrics"] == {"eval_accuracy": 0.5}


def test_plain_numpy_reads_it_without_pickle(saved):
    path, definition, model, opt = saved
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(archive["header"].tobytes())
        assert archive["param/0.W"].tobytes() == model.layers[0].params["W"].tobytes()
        assert archive["optim/v"].tobytes() == opt.buffers["v"].tobytes()
        assert set(archive.files) == {"header"} | set(header["arrays"])
    assert header["format"] == "pi-backprop-checkpoint" and header["format_version"] == 1
    assert header["library_version"] == pb.__version__ and header["step"] == 3
    assert header["model"] == definition.to_dict() and header["dtype"] == "float32"
    assert header["optimizer"] == {"kind": "adam", "hyper": opt.hyper(), "step": 3}
    assert header["written_at"].endswith("Z")
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_hash_is_as_documented(saved):
    """An independent implementation of the documented SHA-256 agrees with the file."""
    path = saved[0]
    with zipfile.ZipFile(path) as archive:
        header = json.loads(np.load(io.BytesIO(archive.read("header.npy"))).tobytes())
        for name, entry in header["arrays"].items():
            assert hashlib.sha256(archive.read(f"{name}.npy")).hexdigest() == entry["sha256"]
    body = {k: v for k, v in header.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert hashlib.sha256(text).hexdigest() == header["sha256"]


# -- damaged files ----------------------------------------------------------------------------


@pytest.mark.parametrize("keep_fraction", [0.0, 0.01, 0.3, 0.6, 0.95, 0.999])
def test_truncated_file_is_damaged(saved, keep_fraction):
    path = saved[0]
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep_fraction)])
    with pytest.raises(ckpt.CheckpointDamaged, match=path.name):
        ckpt.verify_checkpoint(path)


def test_any_bit_flip_is_caught_or_harmless(saved, rng):
    """A flipped bit anywhere either makes the file 'damaged' or leaves every loaded byte the same
    (zip fields nobody reads); it never loads different numbers."""
    path, definition, model, opt = saved
    original = path.read_bytes()
    offsets = np.concatenate([rng.choice(len(original), 250, replace=False),
                              np.arange(len(original) - 300, len(original))])  # all of the zip directory
    harmless = 0
    fresh = definition.build(seed=1)
    fresh_opt = pb.Adam(fresh)
    for offset in offsets:
        damaged = bytearray(original)
        damaged[offset] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(damaged))
        try:
            info = ckpt.verify_checkpoint(path)
        except ckpt.CheckpointDamaged:
            continue
        except ckpt.CheckpointRefused as error:  # a flip that makes the header foreign, still refused
            assert path.name in str(error)
            continue
        fresh.parameter_vector[...] = 0
        ckpt.load_into(info, fresh, fresh_opt)
        assert fresh.parameter_vector.tobytes() == model.parameter_vector.tobytes()
        assert fresh_opt.buffers["m"].tobytes() == opt.buffers["m"].tobytes()
        harmless += 1
    assert harmless < len(offsets) // 3   # most flips hit data or meaningful fields, and are caught


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"hello, I am a text file\n", "not a checkpoint"),
    (b"PK\x03\x04" + bytes(100), "truncated or damaged"),
])
def test_non_checkpoints_are_damaged(tmp_path, content, reason):
    path = tmp_path / "ckpt-00000001.npz"
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointDamaged, match=reason):
        ckpt.verify_checkpoint(path)


def test_edited_array_fails_its_hash(saved):
    path = saved[0]
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = bytearray(members["param/0.b.npy"])
    data[-1] ^= 0x40
    members["param/0.b.npy"] = bytes(data)
    with zipfile.ZipFile(path, "w") as archive:  # fresh CRCs: only our hash can notice
        for name, value in members.items():
            archive.writestr(name, value)
    with pytest.raises(ckpt.CheckpointDamaged, match="'param/0.b' hash mismatch"):
        ckpt.verify_checkpoint(path)


def test_edited_header_fails_its_hash(saved):
    path = saved[0]
    rewrite(path, {"step": 999}, fix_hash=False)
    with pytest.raises(ckpt.CheckpointDamaged, match="header hash mismatch"):
        ckpt.verify_checkpoint(path)


# -- refused files: nothing executed ----------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: proof that code from a file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_file_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt-00000005.npz"
    path.write_bytes(pickle.dumps({"params": _Payload(marker)}, protocol=4))
    pickle.loads(path.read_bytes())          # the payload is live: loading it would run code
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ckpt.CheckpointRefused, match="pickled data, refused"):
        ckpt.verify_checkpoint(path)
    with pytest.raises(CheckpointError):
        ckpt.find_latest(tmp_path)
    assert not marker.exists()


def test_object_array_is_refused_and_not_run(saved, tmp_path):
    path, definition, model, opt = saved
    marker = tmp_path / "pwned"
    evil = np.array([_Payload(marker), 1], dtype=object)
    rewrite(path, arrays={"param/0.b": evil})
    with np.load(path, allow_pickle=True) as archive:   # the payload is live
        archive["param/0.b"]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ckpt.CheckpointRefused, match="'param/0.b' holds pickled Python objects"):
        ckpt.verify_checkpoint(path)
    with pytest.raises(ckpt.CheckpointRefused):
        ckpt.find_latest(path.parent, definition)
    assert not marker.exists()


def test_non_npy_member_is_refused(saved):
    path = saved[0]
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("run_me.pkl", pickle.dumps(1))
    with pytest.raises(ckpt.CheckpointRefused, match="'run_me.pkl', which is not a .npy array"):
        ckpt.verify_checkpoint(path)


def test_unknown_format_version_is_refused(saved):
    path = saved[0]
    rewrite(path, {"format_version": 99})
    with pytest.raises(ckpt.CheckpointRefused, match="format version 99 is unknown"):
        ckpt.verify_checkpoint(path)


def test_other_model_is_refused(saved):
    path = saved[0]
    info = ckpt.verify_checkpoint(path)
    with pytest.raises(ckpt.CheckpointRefused, match="is for model 'sensor_mlp', not 'camera_cnn'"):
        ckpt.check_compatible(info, pb.load_definition("camera_cnn"))
    changed = pb.load_definition("sensor_mlp").to_dict()
    changed["layers"][0]["out_features"] = 65
    other = pb.ModelDefinition.from_dict(changed)
    with pytest.raises(ckpt.CheckpointRefused, match=r"different 'sensor_mlp' model \(layers differ\)"):
        ckpt.check_compatible(info, other)
    with pytest.raises(ckpt.CheckpointRefused, match="for model 'sensor_mlp'"):
        ckpt.find_latest(path.parent, pb.load_definition("camera_cnn"))


def test_wrong_shape_is_refused_before_reading(saved):
    path, definition, model, opt = saved
    rewrite(path, arrays={"param/0.W": np.zeros((33, 64), np.float32)})
    info = ckpt.verify_checkpoint(path)
    fresh = definition.build(seed=1)
    before = fresh.parameter_vector.copy()
    with pytest.raises(ckpt.CheckpointRefused, match=r"'param/0.W' has shape \(33, 64\), the model needs \(32, 64\)"):
        ckpt.load_into(info, fresh, pb.Adam(fresh))
    assert fresh.parameter_vector.tobytes() == before.tobytes()


def test_other_optimizer_is_refused(saved):
    path, definition, model, opt = saved
    fresh = definition.build(seed=1)
    with pytest.raises(ckpt.CheckpointRefused, match="optimizer state is for 'adam', not 'sgd'"):
        ckpt.load_into(ckpt.verify_checkpoint(path), fresh, pb.SGD(fresh, lr=0.1))


# -- writing: durability, disk full, pruning --------------------------------------------------


def test_write_order_is_fsync_replace_fsync_dir_then_prune(tmp_path, monkeypatch):
    definition, model, opt = trained()
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, model, opt, step, keep=2)
    events = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync-dir" if os.path.isdir(target) else "fsync-file", Path(target).name))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b)))
    monkeypatch.setattr(os, "unlink", lambda p: (events.append(("unlink", Path(p).name)), real_unlink(p)))
    ckpt.save_checkpoint(tmp_path, model, opt, 3, keep=2)
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync-file", "replace", "fsync-dir", "unlink", "fsync-dir"]
    assert events[0][1].startswith(".ckpt-00000003.") and events[0][1].endswith(".tmp")
    assert events[1][1] == "ckpt-00000003.npz" and events[3][1] == "ckpt-00000001.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000002.npz", "ckpt-00000003.npz"]


class _FullDisk:
    """A file object that fails with ENOSPC after ``room`` bytes (or at fsync if room is None)."""

    def __init__(self, raw, room):
        self.raw, self.room = raw, room

    def write(self, data):
        if self.room is not None:
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= len(data)
        return self.raw.write(data)

    def __getattr__(self, name):
        return getattr(self.raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.raw.close()


@pytest.mark.parametrize("room", [0, 5000, 30000, None])
def test_disk_full_keeps_previous_and_removes_temp(tmp_path, monkeypatch, room):
    definition, model, opt = trained()
    previous = ckpt.save_checkpoint(tmp_path, model, opt, 1)
    before = previous.read_bytes()
    real_fdopen, real_fsync = os.fdopen, os.fsync
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), room))
    if room is None:
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(ckpt.CheckpointWriteError,
                       match=r"ckpt-00000002.npz: no space left on device; ckpt-00000001.npz is intact") as caught:
        ckpt.save_checkpoint(tmp_path, model, opt, 2)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000001.npz"]
    assert previous.read_bytes() == before
    assert ckpt.verify_checkpoint(previous).step == 1


def test_keep_prunes_only_older_files(tmp_path):
    definition, model, opt = trained()
    (tmp_path / "ckpt-00000050.npz").write_bytes(b"left by an abandoned run")
    for step in range(1, 6):
        ckpt.save_checkpoint(tmp_path, model, opt, step, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-00000003.npz", "ckpt-00000004.npz", "ckpt-00000005.npz", "ckpt-00000050.npz"]


# -- scanning a directory ---------------------------------------------------------------------


def test_scan_falls_back_past_damaged_newest_with_a_warning(tmp_path, caplog):
    definition, model, opt = trained()
    for step in (10, 20, 30):
        ckpt.save_checkpoint(tmp_path, model, opt, step)
    newest = tmp_path / "ckpt-00000030.npz"
    newest.write_bytes(newest.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="pi_backprop"):
        scan = ckpt.find_latest(tmp_path, definition)
    assert scan.latest.step == 20 and [p.name for p, _ in scan.skipped] == ["ckpt-00000030.npz"]
    assert "skipping damaged checkpoint" in caplog.text and "ckpt-00000030.npz" in caplog.text


def test_scan_with_only_damaged_files_is_an_error(tmp_path):
    for step in (1, 2):
        (tmp_path / ckpt.checkpoint_name(step)).write_bytes(b"PK\x03\x04junk")
    with pytest.raises(CheckpointError, match="no intact checkpoint .* all 2 are damaged"):
        ckpt.find_latest(tmp_path)


def test_scan_of_empty_or_missing_directory(tmp_path):
    assert ckpt.find_latest(tmp_path).latest is None
    assert ckpt.find_latest(tmp_path / "nope").latest is None


def test_scan_at_most_a_step_and_set_aside_what_is_newer(tmp_path):
    definition, model, opt = trained()
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(tmp_path, model, opt, step, keep=10)
    assert ckpt.find_latest(tmp_path, definition, at_most=35).latest.step == 30
    assert ckpt.find_latest(tmp_path, definition, at_most=9).latest is None
    moved = ckpt.set_aside(tmp_path, after_step=20, keep=1)
    assert [p.name for p in moved] == ["ckpt-00000040.npz", "ckpt-00000030.npz"]   # newest first
    assert [p.name for p in ckpt.checkpoint_files(tmp_path)] == ["ckpt-00000020.npz", "ckpt-00000010.npz"]
    aside = tmp_path / ckpt.SET_ASIDE
    assert [p.name for p in ckpt.checkpoint_files(aside)] == ["ckpt-00000040.npz"]   # only the newest kept
    assert ckpt.verify_checkpoint(aside / "ckpt-00000040.npz").step == 40            # moved intact
    assert ckpt.find_latest(tmp_path, definition).latest.step == 20
    assert ckpt.set_aside(tmp_path, after_step=20) == []


# -- the command ------------------------------------------------------------------------------


def test_checkpoint_list_and_show(tmp_path, capsys):
    definition, model, opt = trained()
    for step in (10, 20):
        ckpt.save_checkpoint(tmp_path, model, opt, step, metrics={"train_loss": 0.5, "eval_accuracy": 0.875})
    assert main(["checkpoint", "list", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["ckpt-00000020.npz", "20", "sensor_mlp"]
    assert lines[1].split()[-3:] == ["0.5000", "87.5%", "OK"] and len(lines) == 3
    (tmp_path / "ckpt-00000010.npz").write_bytes(b"")
    assert main(["checkpoint", "list", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines()[2].endswith("DAMAGED: is empty (a write was cut short)")
    assert main(["checkpoint", "show", str(tmp_path / "ckpt-00000020.npz")]) == 0
    out = capsys.readouterr().out
    assert "  step         20\n" in out and "integrity    OK" in out and "adam (beta1 0.9" in out
    assert main(["checkpoint", "show", str(tmp_path / "ckpt-00000010.npz")]) == 1
    assert "integrity    DAMAGED: is empty" in capsys.readouterr().out
    assert main(["checkpoint", "list", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().endswith("is not a folder")
    assert main(["checkpoint", "show", str(tmp_path)]) == 2
    assert "is a folder: pi-backprop checkpoint list" in capsys.readouterr().err


# -- crafted headers: a valid hash over fields of the wrong kind ------------------------------

def _nested(field, value):
    """Header changes that set the dotted ``field`` ("optimizer.step") to ``value``."""
    def change(header):
        *parents, last = field.split(".")
        table = header
        for name in parents:
            table = table[name]
        table[last] = value
        return header
    return change


CRAFTED = {
    "step a string": ("step", "abc"), "step negative": ("step", -1), "step a bool": ("step", True),
    "model a string": ("model", "sensor_mlp"), "model without layers": ("model", {"name": "m"}),
    "metrics a list": ("metrics", [1, 2]), "metric a string": ("metrics.train_loss", "low"),
    "dtype unknown": ("dtype", "float16"), "optimizer a list": ("optimizer", []),
    "optimizer step a string": ("optimizer.step", "3"), "hyper a string": ("optimizer.hyper.lr", "fast"),
    "training lr a string": ("training.lr", "x"), "batch size zero": ("training.batch_size", 0),
    "data held_out a float": ("data.held_out", 1.5), "rng a string": ("rng", "seed"),
    "written_at a number": ("written_at", 12), "array shape a string": ("arrays.header_like", None),
}


@pytest.mark.parametrize("field, value", CRAFTED.values(), ids=CRAFTED.keys())
def test_a_crafted_header_is_refused_in_one_line_naming_the_field(saved, capsys, tmp_path, field, value):
    path = saved[0]
    if field == "arrays.header_like":         # an array entry whose shape is not a list of ints
        with zipfile.ZipFile(path) as archive:
            header = json.loads(np.load(io.BytesIO(archive.read("header.npy"))).tobytes())
        name = sorted(header["arrays"])[0]
        changes, field = {"arrays": {**header["arrays"], name: {**header["arrays"][name], "shape": "64"}}}, \
            f"arrays.{name}.shape"
    else:
        with zipfile.ZipFile(path) as archive:
            header = json.loads(np.load(io.BytesIO(archive.read("header.npy"))).tobytes())
        changes = _nested(field, value)(header)
    rewrite(path, changes)
    with pytest.raises(ckpt.CheckpointRefused) as caught:
        ckpt.verify_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert f"header field {field!r} is " in message or (field == "model" and "model definition" in message), message

    assert main(["checkpoint", "list", str(path.parent)]) == 1
    out = capsys.readouterr().out
    assert "REFUSED: " in out and "Traceback" not in out
    assert main(["checkpoint", "show", str(path)]) == 1
    assert "integrity    REFUSED: " in capsys.readouterr().out
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(32, np.float32))
    assert main(["predict", "--checkpoint", str(path), str(npy)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["train", "--model", "sensor_mlp", "--data", "sim:sensor?n=64", "--steps", "5",
                 "--checkpoint-dir", str(path.parent)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(path) in err
