"""Every command that reads the sample store, on a store whose pages a failing card
overwrote: one line that names the file and the repair, exit status 2 (``data stats`` and
``data check`` report the damage instead), and ``data check --repair`` mends it."""

import shutil

import pytest
from cli_state import build_state
from store_damage import damage, settle, spread_pages

from pi_backprop.cli import main
from pi_backprop.storage import salvage
from pi_backprop.storage.store import SampleStore

MODEL = """\
name = "tiny_camera"
input_shape = [1, 12, 12]
classes = ["empty", "circle", "hbar", "vbar"]
loss = "softmax_cross_entropy"
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
out_features = 4
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("state")
    build_state(state_dir, "camera", steps=40)
    settle(state_dir / "samples.db")
    return state_dir


@pytest.fixture
def damaged(trained, tmp_path):
    state_dir = tmp_path / "state"
    shutil.copytree(trained, state_dir)
    damage(state_dir / "samples.db", spread_pages(state_dir / "samples.db", spare=("classes",)))
    (tmp_path / "tiny.toml").write_text(MODEL)
    return state_dir


def run(capsys, *argv):
    status = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


COMMANDS = {
    "data export": lambda d: ["data", "export", d.parent / "out.npz", "--state-dir", d],
    "data export val": lambda d: ["data", "export", d.parent / "out.npz", "--split", "val", "--state-dir", d],
    "evaluate": lambda d: ["evaluate", "--state-dir", d],
    "evaluate all": lambda d: ["evaluate", "--state-dir", d, "--split", "all"],
    "train --data": lambda d: ["train", "--model", d.parent / "tiny.toml", "--data", d / "samples.db",
                               "--steps", 5, "--checkpoint-dir", d.parent / "ckpt"],
}


@pytest.mark.parametrize("argv", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_command_on_a_damaged_store_says_so_in_one_line(capsys, damaged, argv):
    status, out, err = run(capsys, *argv(damaged))
    assert status == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"{damaged / 'samples.db'} is damaged" in lines[0]
    assert f"pi-backprop data check --repair --db {damaged / 'samples.db'}" in lines[0]


def test_report_on_a_damaged_store_says_so_in_one_line(capsys, damaged):
    pytest.importorskip("matplotlib")
    status, out, err = run(capsys, "report", "--state-dir", damaged)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "is damaged" in err and "data check --repair" in err


def test_stats_reports_the_damage_and_check_finds_and_repairs_it(capsys, damaged):
    db = damaged / "samples.db"
    status, out, err = run(capsys, "data", "stats", "--db", db)
    assert "Traceback" not in err
    if status == 2:       # the counts themselves touched a damaged page
        assert "is damaged" in err and len(err.strip().splitlines()) == 1
    else:
        assert status == 1
        assert "integrity   damaged (" in out and f"pi-backprop data check --repair --db {db}" in out

    status, out, err = run(capsys, "data", "check", "--db", db)
    assert status == 1 and err == ""
    assert out.startswith(f"sample store {db} is damaged: ") and len(out.strip().splitlines()) == 1
    assert list(damaged.glob("samples.db.corrupt-*")) == []      # a check changes nothing

    status, out, err = run(capsys, "data", "check", "--repair", "--db", db)
    assert status == 0 and err == ""
    assert out.startswith(f"sample store {db} was damaged: saved ") and "lost" in out
    aside = list(damaged.glob("samples.db.corrupt-*"))
    assert aside and f"the damaged file is kept as {damaged}/samples.db.corrupt-" in out

    status, out, _ = run(capsys, "data", "check", "--db", db)
    assert status == 0 and out.strip() == f"sample store {db} is intact (SQLite's integrity check passed)"
    status, out, _ = run(capsys, "data", "stats", "--db", db)
    assert status == 0 and "integrity   ok (quick check)" in out
    status, _, err = run(capsys, "evaluate", "--state-dir", damaged)     # the commands work again
    assert status == 0, err
    with SampleStore(db, readonly=True) as store:
        assert 0 < len(store) < 240


def test_check_of_an_intact_store_changes_nothing(capsys, trained, tmp_path):
    db = tmp_path / "samples.db"
    shutil.copy(trained / "samples.db", db)
    before = db.read_bytes()
    status, out, _ = run(capsys, "data", "check", "--repair", "--db", db)
    assert status == 0 and "is intact" in out
    assert db.read_bytes() == before and salvage.check(db) == []


def test_check_of_a_missing_store_is_one_line(capsys, tmp_path):
    status, _, err = run(capsys, "data", "check", "--db", tmp_path / "none.db")
    assert status == 2 and err.strip() == f"pi-backprop data: error: no sample store at {tmp_path / 'none.db'}"
