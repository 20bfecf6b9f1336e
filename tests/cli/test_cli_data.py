"""``pi-backprop data stats|export|import|clear`` through the real command-line entry point."""

import numpy as np
import pytest

from pi_backprop.cli import main
from pi_backprop.storage.store import SampleStore, read_npz, write_npz

NAMES = ["still", "walking", "tapping", "shaking"]


@pytest.fixture
def data_file(tmp_path, rng):
    path = tmp_path / "data.npz"
    x = rng.random((40, 32)).astype(np.float32)
    y = np.arange(40) % 4
    write_npz(path, x, y, NAMES)
    return path, x, y


def run(capsys, *argv):
    status = main(["data", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def test_import_stats_export_clear(tmp_path, capsys, data_file):
    path, x, y = data_file
    db = tmp_path / "state" / "samples.db"
    status, out, _ = run(capsys, "import", path, "--db", db)
    assert status == 0 and "imported 40 samples" in out and "40 stored" in out

    status, out, _ = run(capsys, "--db", db, "stats")       # location before the action works too
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"sample store {db}"
    assert "40, each 32 <f4" in out and "bound 500 per class, 20% held out" in out
    with SampleStore(db, readonly=True) as store:
        train, val = store.class_counts("train"), store.class_counts("val")
    for index, name in enumerate(NAMES):
        assert any(line.split() == [name, str(train[index]), str(val[index])] for line in lines), name

    out_file = tmp_path / "out.npz"
    status, out, _ = run(capsys, "export", out_file, "--state-dir", db.parent)
    assert status == 0 and f"wrote 40 samples (all) from {db}" in out
    back_x, back_y, names = read_npz(out_file)
    np.testing.assert_array_equal(back_x, x)
    np.testing.assert_array_equal(back_y, y)
    assert names == tuple(NAMES)

    status, _, err = run(capsys, "clear", "--db", db)
    assert status == 2
    assert err.strip() == (f"pi-backprop data: error: this would delete 40 samples and the training history "
                           f"in {db}; add --yes to do it (pi-backprop data export FILE.npz keeps a copy)")
    assert _labelled(db) == 40   # nothing lost

    status, out, _ = run(capsys, "clear", "--yes", "--db", db)
    assert status == 0 and "deleted 40 samples" in out
    with SampleStore(db, readonly=True) as store:
        assert len(store) == 0 and store.class_names == tuple(NAMES)


def test_state_dir_from_the_environment(tmp_path, capsys, data_file, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "svc"))
    assert run(capsys, "import", data_file[0])[0] == 0
    assert (tmp_path / "svc" / "samples.db").is_file()


@pytest.mark.parametrize("argv, message", [
    (["stats"], "no sample store at"),
    (["export", "x.npz"], "no sample store at"),
    (["clear", "--yes"], "no sample store at"),
])
def test_missing_store(tmp_path, capsys, argv, message):
    status, out, err = run(capsys, *argv, "--db", tmp_path / "none.db")
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none.db").exists()


def test_import_checks_shape_and_classes(tmp_path, capsys, data_file):
    db = tmp_path / "samples.db"
    run(capsys, "import", data_file[0], "--db", db)
    other = tmp_path / "other.npz"
    write_npz(other, np.zeros((3, 16)), [0, 1, 2], NAMES)
    status, _, err = run(capsys, "import", other, "--db", db)
    assert status == 2 and "samples have shape (16,) but the store holds shape (32,)" in err
    write_npz(other, np.zeros((3, 32)), [0, 1, 2], ["a", "b", "c"])
    status, _, err = run(capsys, "import", other, "--db", db)
    assert status == 2 and "holds classes" in err
    assert _labelled(db) == 40


def test_import_respects_the_store_bounds(tmp_path, capsys, data_file):
    db = tmp_path / "samples.db"
    SampleStore(db, max_per_class=3).close()                 # as the service configured it
    status, out, _ = run(capsys, "import", data_file[0], "--db", db)
    assert status == 0 and "12 stored (28 oldest dropped by the store's bounds)" in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["data"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["data", "stats", "--db", "a", "--state-dir", "b"])
    assert caught.value.code == 2


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["data", "clear", "--help"])
    assert "example:\n  pi-backprop data clear --yes" in capsys.readouterr().out


def _labelled(db):
    with SampleStore(db, readonly=True) as store:
        return store.stats().labelled


def test_a_bad_import_file_creates_no_store(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    db = tmp_path / "state" / "samples.db"
    status, out, err = run(capsys, "import", bad, "--db", db)
    assert status == 2 and "is not a .npz file" in err
    assert not db.exists() and "creating" not in out
