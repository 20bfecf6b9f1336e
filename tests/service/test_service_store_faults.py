"""The running service on a failing card: a disk that fills up, a store another process
locks, a damaged or deleted store, a second service refused. Real parts: a tmpfs, a second
process holding SQLite's lock, pages of the file overwritten with garbage."""

import logging
import re
import subprocess
import sys

import pytest
from running_service import DEADLINE, running, wait_for, write_config
from store_damage import damage, filled_store, settle, spread_pages

from pi_backprop.exc import ConfigError
from pi_backprop.service import storekeeper
from pi_backprop.service.config import load_config
from pi_backprop.service.loop import Service
from pi_backprop.service.sdnotify import Notifier
from pi_backprop.storage import salvage
from pi_backprop.storage import store as store_module
from pi_backprop.storage.store import SampleStore

pytest.importorskip("gpiozero")


class Recorder:
    def __init__(self, bus, kinds=("sample", "prediction")):
        self.events = []
        bus.subscribe(self.events.append, kinds)

    def of(self, kind):
        return [e for e in list(self.events) if e.kind == kind]


def messages(caplog, level=logging.WARNING):
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def test_a_full_disk_drops_samples_with_one_line_and_the_service_trains_predicts_and_recovers(
        tmp_path, small_disk, caplog):
    disk = small_disk(3)
    state = disk.path / "state"
    # never rest: no new sample can be stored, and training must go on all the same
    config = write_config(tmp_path / "c.toml", training={"checkpoint_every_seconds": 3600, "rest_after_epochs": 0})
    with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, state) as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("sample")) >= 20 and service.trainer.step > 0, what="samples and training")
        disk.fill()
        wait_for(lambda: any(m.startswith("sample not stored") and "is full" in m for m in messages(caplog)),
                 what="the full-disk line")
        step, predictions = service.trainer.step, len(record.of("prediction"))
        wait_for(lambda: len(record.of("prediction")) >= predictions + 30, what="predictions on a full disk")
        wait_for(lambda: service.trainer.step > step, what="training on a full disk")
        assert service.state == "error" and service.thread.is_alive()
        full_lines = [m for m in messages(caplog) if m.startswith("sample not stored") and "is full" in m]
        assert len(full_lines) == 1, full_lines          # said once, not per sample
        assert full_lines[0].startswith("sample not stored: cannot store samples: the disk holding ")
        assert "free" in full_lines[0]
        stored = len(record.of("sample"))
        disk.free_up()
        wait_for(lambda: len(record.of("sample")) >= stored + 5, what="samples stored again")
        assert any(m.startswith("storing samples again") for m in messages(caplog, logging.INFO))
    assert not any(r.exc_info for r in caplog.records)    # no traceback anywhere

    disk.fill()                                          # a restart on a full disk
    caplog.clear()
    with running(config, state) as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("prediction")) >= 10, what="predictions after a restart on a full disk")
        assert service.thread.is_alive()
    assert not any(r.exc_info for r in caplog.records)


def test_a_store_locked_by_another_process_loses_no_sample_and_says_so_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT", 0.5)   # the first try waits this long, not 10 s
    state = tmp_path / "state"
    config = write_config(tmp_path / "c.toml")
    with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, state) as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("sample")) >= 10, what="stored samples")
        code = ("import sqlite3, sys\n"
                f"db = sqlite3.connect({str(service.store.path)!r}, isolation_level=None)\n"
                "db.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\nsys.stdin.readline()\n")
        holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            wait_for(lambda: any("is locked by" in m for m in messages(caplog)), what="the lock warning")
            captured = len(record.of("prediction"))
            wait_for(lambda: len(record.of("prediction")) >= captured + 40, what="captures while locked")
            assert service.writer.waiting > 10
        finally:
            holder.stdin.write("\n")
            holder.stdin.close()
            holder.wait(DEADLINE)
        wait_for(lambda: service.writer.waiting == 0, what="the waiting samples stored")
        wait_for(lambda: any("writable again" in m for m in messages(caplog, logging.INFO)), what="the all-clear")
        service.commands.submit("pause", source="test").result(DEADLINE)
        captured_labelled = {e.data["time"] for e in record.of("prediction") if e.data["label"] is not None}
    stored_times = {e.data["time"] for e in record.of("sample")}     # the stop stores the last batch
    lock_lines = [m for m in messages(caplog) if "is locked by" in m and not m.startswith("metrics not stored")]
    assert len(lock_lines) == 1 and f"pid {holder.pid} python" in lock_lines[0]
    missing = captured_labelled - stored_times
    assert len(missing) <= 2, missing        # at most the samples in flight at the pause
    with SampleStore(state / "samples.db", readonly=True) as store:
        assert len(store) >= len(stored_times) - 1
    assert not any(r.exc_info for r in caplog.records)


def test_a_refused_second_service_changes_nothing_on_disk(tmp_path):
    state = tmp_path / "state"
    first = write_config(tmp_path / "first.toml", store={"max_per_class": 400})
    second = write_config(tmp_path / "second.toml", store={"max_per_class": 7})
    with running(first, state) as service:
        wait_for(lambda: len(service.store) > 0, what="a sample")
        before = dict(service.store._db.execute("SELECT key, value FROM settings"))
        with pytest.raises(ConfigError, match=r"another pi-backprop process \(pid \d+\) runs with the state "
                                              r"directory .*; stop it first .* or give another --state-dir"):
            with Service(load_config(second), simulate=True, state_dir=state, notifier=Notifier(environ={})):
                pass
        after = dict(service.store._db.execute("SELECT key, value FROM settings"))
    assert before == after and after["max_per_class"] == 400


def aside_files(state):
    """The damaged stores moved aside (without their -wal and -shm files)."""
    return [p for p in state.glob("samples.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]


SENSOR_CLASSES = ("still", "slow_wave", "fast_wave", "spikes")   # sensor_mlp's, as FAST_SENSOR runs it


def test_a_store_damaged_before_the_start_is_repaired_and_the_service_runs(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    filled_store(state / "samples.db", SENSOR_CLASSES, samples=400, size=32)
    damage(state / "samples.db", spread_pages(state / "samples.db", 6))
    config = write_config(tmp_path / "c.toml")
    with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, state) as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("sample")) >= 10, what="samples stored after the repair")
        assert service.thread.is_alive()
    repaired = [m for m in messages(caplog, logging.ERROR) if "was damaged" in m]
    assert len(repaired) == 1, messages(caplog)
    found = re.match(rf"sample store {re.escape(str(state))}/samples.db was damaged: saved (\d+) (of 400 )?samples",
                     repaired[0])
    assert found, repaired[0]
    saved = int(found[1])
    assert 0 < saved < 400
    assert len(aside_files(state)) == 1
    assert salvage.check(state / "samples.db") == []
    with SampleStore(state / "samples.db", readonly=True) as store:
        assert len(store) >= saved + 10
    assert not any(r.exc_info for r in caplog.records)


def test_a_store_damaged_while_running_is_repaired_when_a_read_meets_the_damage(tmp_path, caplog):
    state = tmp_path / "state"
    config = write_config(tmp_path / "c.toml", store={"max_per_class": 5000})
    with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, state) as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("sample")) >= 300 and service.trainer.dataset is not None,
                 what="samples and training")
        service.commands.submit("pause", source="test").result(DEADLINE)   # keep the pages still
        path = service.store.path
        with service.store._lock:
            settle(path)
            damage(path, spread_pages(path, 6, spare=("classes", "settings", "sqlite_sequence")))
            service.store._db.execute("PRAGMA shrink_memory")   # what it reads next comes from the card
        service.commands.submit("resume", source="test").result(DEADLINE)
        wait_for(lambda: any("was damaged" in m for m in messages(caplog, logging.ERROR)), what="the repair")
        stored = len(record.of("sample"))
        wait_for(lambda: len(record.of("sample")) >= stored + 10, what="samples stored in the repaired store")
        assert service.thread.is_alive() and service.keeper.repairs == 1
    said = [m for m in messages(caplog) if "damaged" in m]
    assert len(said) == 1 and "was damaged: saved " in said[0], said     # one line, the repair's
    assert len(aside_files(state)) == 1
    assert salvage.check(state / "samples.db") == []
    assert not any(r.exc_info for r in caplog.records)


def test_a_store_deleted_while_running_is_noticed_and_made_afresh(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(storekeeper, "WATCH_SECONDS", 0.5)
    state = tmp_path / "state"
    config = write_config(tmp_path / "c.toml")
    with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, state) as service:
        record = Recorder(service.events)
        wait_for(lambda: len(record.of("sample")) >= 20, what="stored samples")
        (state / "samples.db").unlink()
        wait_for(lambda: any("was deleted while the service ran" in m for m in messages(caplog)),
                 what="the deletion noticed")
        stored = len(record.of("sample"))
        wait_for(lambda: len(record.of("sample")) >= stored + 10, what="samples in the fresh store")
    deleted = [m for m in messages(caplog) if "was deleted" in m]
    assert len(deleted) == 1 and deleted[0] == (f"sample store {state / 'samples.db'} was deleted while the "
                                                "service ran: creating a fresh one")
    with SampleStore(state / "samples.db", readonly=True) as store:
        assert 10 <= len(store) < len(record.of("sample"))
        assert store.class_names == SENSOR_CLASSES
        assert service.result["samples"] == int(store.class_counts("all").sum())   # the summary tells the truth
    assert not any(r.exc_info for r in caplog.records)


def test_checkpoints_failing_on_a_full_disk_are_said_once_and_the_summary_tells_what_was_not_saved(
        tmp_path, small_disk, caplog):
    disk = small_disk(16)      # room for the store's WAL (up to 4 MB) until it is filled on purpose
    state = disk.path / "state"
    config = write_config(tmp_path / "c.toml", training={"checkpoint_every_seconds": 1})
    with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, state) as service:
        wait_for(lambda: service.trainer.last_checkpoint is not None, what="a first checkpoint")
        disk.fill()
        wait_for(lambda: service._checkpoint_failures >= 2, what="two failed checkpoint writes")
        assert service.thread.is_alive()
    failed = [m for m in messages(caplog, logging.ERROR) if m.startswith("checkpoint not written")]
    assert len(failed) == 1, failed
    assert "no space left on device" in failed[0] and "is intact" in failed[0]
    assert "the previous one is intact" not in failed[0]
    assert service.result["unsaved_steps"] > 0
    assert service.result["checkpoint"] == service.trainer.last_checkpoint
    assert not any(r.exc_info for r in caplog.records)
