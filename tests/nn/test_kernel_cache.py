"""The compiled-kernel cache is keyed by the engine's sources: no edit can leave stale code."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pi_backprop.nn.engine import cache

PACKAGE = Path(__file__).resolve().parents[2] / "pi_backprop"


def _copy_engine(tmp_path):
    copy = tmp_path / "engine"
    shutil.copytree(cache.SOURCES_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_key_changes_with_every_engine_source_and_the_versions(tmp_path):
    copy = _copy_engine(tmp_path)
    key = cache.cache_key("0.68.1", copy)
    assert key == cache.cache_key("0.68.1", copy)
    assert len(key) == cache.KEY_LENGTH and int(key, 16) >= 0
    assert cache.cache_key("0.56.4", copy) != key
    sources = cache.source_files(copy)
    assert {p.relative_to(copy).as_posix() for p in sources} >= {
        "kernels.py", "layer_kernels.py", "jit.py", "opcodes.py", "ops/dense.py", "ops/elementwise.py"}
    seen = {key}
    for path in sources:
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        edited = cache.cache_key("0.68.1", copy)
        assert edited not in seen, path.name
        seen.add(edited)
        path.write_bytes(original)
    assert cache.cache_key("0.68.1", copy) == key
    (copy / ".#kernels.py").symlink_to(copy / "no-such-file")  # an editor's lock file: ignored
    assert cache.cache_key("0.68.1", copy) == key
    (copy / "new_kernels.py").write_text("x = 1\n")  # a new file counts too
    assert cache.cache_key("0.68.1", copy) != key


def test_old_keys_are_pruned_and_nothing_else_is_touched(tmp_path):
    base = tmp_path / "numba"
    old = [base / f"kernels-{'%016x' % n}" for n in range(4)]
    for age, folder in enumerate(old):
        (folder / "engine_1").mkdir(parents=True)
        (folder / "engine_1" / "kernels.run-1.py311.nbi").write_bytes(b"x")
        os.utime(folder, (1_000_000 - age * 1000, 1_000_000 - age * 1000))
    unrelated = [base / "nn_856ec3eb34da4e38d32caca90de5d8a2eab5efcc", base / "kernels-notahash", base / "notes.txt"]
    unrelated[0].mkdir()
    unrelated[1].mkdir()
    unrelated[2].write_text("mine")
    current = base / f"kernels-{'f' * 16}"
    cache.prepare(current)
    assert current.is_dir()
    assert old[0].is_dir()                       # the most recently used other key is kept
    assert not any(p.exists() for p in old[1:])  # older keys are gone
    assert all(p.exists() for p in unrelated)
    cache.prepare(current)                       # idempotent
    assert current.is_dir() and old[0].is_dir()


def test_the_unkeyed_folders_of_0_1_go_but_other_projects_folders_stay(tmp_path):
    base = tmp_path / "numba"
    ours, theirs, mixed = (base / f"nn_{c * 40}" for c in "abc")
    for folder, names in ((ours, ["kernels_fused.run-40.py311.nbi", "kernels_fused.run-40.py311.1.nbc",
                                  "kernels_numba._k_dense-12.py311.nbi"]),
                          (theirs, ["model.predict-3.py311.nbi"]),
                          (mixed, ["kernels_numba._k_relu-5.py311.nbi", "notes.txt"])):
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_bytes(b"x")
    assert cache.prepare(base / f"kernels-{'0' * 16}")
    assert not ours.exists() and theirs.is_dir() and mixed.is_dir()


def test_an_unwritable_cache_is_one_warning_not_an_error(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cache.prepare(blocker / "kernels-0000000000000000") is False  # then jit caches nothing
    assert "not writable" in caplog.text
    assert cache.prepare(tmp_path / "kernels-0000000000000000") is True


def test_an_unreadable_engine_source_turns_caching_off_with_one_warning(monkeypatch, caplog):
    def unreadable(numba_version, directory=cache.SOURCES_DIR):
        raise PermissionError(13, "Permission denied", str(directory / "kernels.py"))
    monkeypatch.setattr(cache, "cache_key", unreadable)
    assert cache.kernel_cache_dir("0.60.0") is None
    assert "cannot read the engine's source" in caplog.text and "Permission denied" in caplog.text


@pytest.fixture
def private_tmp(monkeypatch, tmp_path):
    """The temporary folder the private fallback goes under (``tempfile.gettempdir()``)."""
    import tempfile
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def unwritable_base(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")        # nothing can be made under it, not even by root
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "numba"))
    return blocker / "numba"


def test_an_unwritable_base_falls_back_to_a_private_folder_of_this_user(private_tmp, unwritable_base):
    choice = cache.choose("0.68.1")
    top = private_tmp / f"pi-backprop-{os.getuid()}"
    assert choice.directory == top / "numba" / choice.wanted.name and choice.directory.is_dir()
    assert choice.wanted.parent == unwritable_base and "is not writable (" in choice.problem
    assert os.stat(top).st_mode & 0o777 == 0o700
    assert str(choice.directory) in choice.text and "set NUMBA_CACHE_DIR" in choice.text
    assert cache.choose("0.68.1") == choice                      # the next process finds the same folder
    if cache.numba_version():
        from pi_backprop.cli import info
        line = dict(info.lines(simulate=True))["numba"]
        assert f"kernel cache: {top / 'numba'}/kernels-" in line and "is not writable" in line


@pytest.mark.parametrize("planted", ["writable by others", "a symlink"])
def test_a_private_folder_someone_else_could_write_to_is_never_used(private_tmp, unwritable_base, tmp_path,
                                                                   planted):
    top = private_tmp / f"pi-backprop-{os.getuid()}"
    if planted == "a symlink":
        (tmp_path / "elsewhere").mkdir()
        top.symlink_to(tmp_path / "elsewhere")
    else:
        top.mkdir()
        top.chmod(0o777)
    choice = cache.choose("0.68.1")
    assert choice.directory is None and choice.text.startswith("none: ")
    assert not (top / "numba").exists()


def test_a_writable_base_is_used_as_it_is(private_tmp, monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    choice = cache.choose("0.68.1")
    assert choice.directory.parent == tmp_path / "cache" and choice.problem is None
    assert choice.text == str(choice.directory) and not list(private_tmp.iterdir())


NO_CACHE = textwrap.dedent("""
    import pi_backprop as pb, numpy as np
    print(pb.get_backend())
    model = pb.Sequential([pb.Dense(3, 2)], seed=0)
    print(model.predict(np.ones((1, 3), np.float32)).shape)
""")


def test_with_no_cache_anywhere_the_numpy_backend_runs_after_one_warning(tmp_path):
    pytest.importorskip("numba")
    blocker = tmp_path / "file"
    blocker.write_text("")
    planted = tmp_path / "tmp" / f"pi-backprop-{os.getuid()}"   # another user's: no private folder either
    planted.mkdir(parents=True)
    planted.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if k not in ("PI_BACKPROP_BACKEND", "XDG_CACHE_HOME")}
    env.update(NUMBA_CACHE_DIR=str(blocker / "numba"), TMPDIR=str(tmp_path / "tmp"), HOME=str(blocker))
    out = subprocess.run([sys.executable, "-c", NO_CACHE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numpy", "(1,", "2)"]
    assert "Traceback" not in out.stderr
    assert "no kernel cache can be written: using the numpy backend" in out.stderr


def test_info_names_the_keyed_cache_folder(monkeypatch, tmp_path):
    pytest.importorskip("numba")
    from pi_backprop.cli import info
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    line = dict(info.lines(simulate=True))["numba"]
    assert f"kernel cache: {tmp_path}/kernels-{cache.cache_key(cache.numba_version())}" in line


STEP = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pi_backprop as pb
    from pi_backprop.nn.engine import jit
    pb.set_backend("numba")
    model = pb.Sequential([pb.Dense(3, 2)], seed=0, dtype=np.float64)
    before = model.parameter_vector.copy()
    x = np.arange(6, dtype=np.float64).reshape(2, 3) / 10
    model.train_step(x, np.array([0, 1]), pb.SoftmaxCrossEntropy(), pb.SGD(model, lr=0.5))
    print(json.dumps({"dir": str(jit.CACHE_DIR), "before": before.tolist(),
                      "grad": model.gradient_vector.tolist(), "after": model.parameter_vector.tolist()}))
""")


@pytest.mark.slow
def test_the_fused_step_follows_an_edit_to_a_callee_in_another_file(tmp_path):
    """The fused entry point (kernels.py) links the SGD update from ops/elementwise.py. An
    edit there, with kernels.py untouched, must reach the compiled step: numba alone would
    load the stale ``run`` from its cache."""
    pytest.importorskip("numba")
    import json
    shutil.copytree(PACKAGE, tmp_path / "pkg" / "pi_backprop", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "pkg"), NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PI_BACKPROP_BACKEND="numba")

    def step():
        out = subprocess.run([sys.executable, "-c", STEP], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["dir"].startswith(str(tmp_path / "cache")), result["dir"]
        return result, [np.array(result[k]) for k in ("before", "grad", "after")]

    first, (p0, g, p1) = step()
    np.testing.assert_allclose(p1, p0 - 0.5 * g, rtol=1e-12)
    callee = tmp_path / "pkg" / "pi_backprop" / "nn" / "engine" / "ops" / "elementwise.py"
    text = callee.read_text()
    assert text.count("p[i] -= lr * gi") == 1
    callee.write_text(text.replace("p[i] -= lr * gi", "p[i] -= 2 * lr * gi"))
    second, (q0, h, q1) = step()
    assert second["dir"] != first["dir"]
    np.testing.assert_array_equal(q0, p0)
    np.testing.assert_allclose(q1, q0 - 2 * 0.5 * h, rtol=1e-12)
    kept = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert kept == sorted(Path(r["dir"]).name for r in (first, second))
