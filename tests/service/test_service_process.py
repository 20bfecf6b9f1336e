"""``pi-backprop run --simulate`` as a real process, as systemd runs it: notifications read
from a real AF_UNIX datagram socket set as ``NOTIFY_SOCKET``, SIGTERM, SIGKILL, restarts."""

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest

from pi_backprop.modeldef import load_definition
from pi_backprop.storage import checkpoint as checkpoint_module

pytest.importorskip("gpiozero")

DEADLINE = 90.0          # generous: start-up and the first checkpoint on a loaded machine
STOP_LIMIT = 5.0         # the issue: exit within 5 s of SIGTERM
WATCHDOG_USEC = 1_000_000

CONFIG = """\
[model]
name = "sensor_mlp"
[source]
kind = "simulated-sensor"
interval = 0.01
[labels]
pins = [5, 6, 12, 13]
[lights]
kind = "rgb"
pins = [17, 27, 22]
[training]
burst_steps = 5
min_samples_per_class = 3
batch_size = 16
lr = 0.01
checkpoint_every_steps = 100000
checkpoint_every_seconds = 1
# never rest: the SIGTERM below must find unsaved steps to checkpoint
rest_after_epochs = 0
[service]
status_interval = 0.2
"""


@pytest.fixture
def notify_socket():
    """A bound datagram socket in a short directory (AF_UNIX paths are limited to 107 bytes)."""
    directory = tempfile.mkdtemp(prefix="pbn")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.1)
    yield sock, path
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def start(tmp_path, *extra, notify=None, env=None):
    config = tmp_path / "config.toml"
    if not config.exists():
        config.write_text(CONFIG)
    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    # numpy kernels: no JIT start-up in each child (the in-process tests cover numba)
    environ.update({"PI_BACKPROP_BACKEND": "numpy", "PYTHONUNBUFFERED": "1", **(env or {})})
    if notify is not None:
        environ.update(NOTIFY_SOCKET=notify, WATCHDOG_USEC=str(WATCHDOG_USEC))
    out = (tmp_path / "out.txt").open("ab")
    return subprocess.Popen([sys.executable, "-m", "pi_backprop", "run", "--simulate", "--config", str(config),
                             "--state-dir", str(tmp_path / "state"), *extra],
                            stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=tmp_path)


def output(tmp_path):
    return (tmp_path / "out.txt").read_text()


def wait_for_output(tmp_path, process, text):
    """Until the child has written ``text`` (it must still run meanwhile)."""
    deadline = time.monotonic() + DEADLINE
    while text not in output(tmp_path):
        assert process.poll() is None and time.monotonic() < deadline, output(tmp_path)
        time.sleep(0.05)


def killed_if_left(process):
    """After a test's own stop: kill the child if it is still there."""
    if process.poll() is None:
        process.kill()
        process.wait()


def checkpoints(tmp_path):
    return sorted((tmp_path / "state" / "checkpoints").glob("ckpt-*.npz"))


def receive(sock, messages, until, what, process=None):
    """Collect (monotonic time, {field: value}) datagrams until ``until(messages)``."""
    deadline = time.monotonic() + DEADLINE
    while not until(messages):
        if time.monotonic() > deadline or (process is not None and process.poll() is not None
                                           and not until(messages)):
            raise AssertionError(f"no {what}; got {[m for _, m in messages][-5:]}")
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        messages.append((time.monotonic(), fields))


def drain(sock, messages):
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return
        messages.append((time.monotonic(), dict(line.split("=", 1) for line in data.decode().splitlines())))


def step_of(status):
    match = re.search(r"step (\d+)", status or "")
    return int(match.group(1)) if match else None


def test_notify_socket_sigterm_checkpoint_and_resume_at_the_same_step(tmp_path, notify_socket):
    sock, path = notify_socket
    # No timed checkpoint: a slow board could otherwise write one just before the SIGTERM
    # comes, and the stop would rightly find nothing new to save.
    untimed = CONFIG.replace("checkpoint_every_seconds = 1", "checkpoint_every_seconds = 3600")
    (tmp_path / "config.toml").write_text(untimed)
    process = start(tmp_path, notify=path)
    messages = []
    try:
        receive(sock, messages, lambda m: any("READY" in f for _, f in m), "READY=1", process)
        # training, and a while of it: then stop it mid-run
        # (and a status line after the first evaluation: on a fast board 200 steps take under 2 s)
        receive(sock, messages, lambda m: (step_of(m[-1][1].get("STATUS")) or 0) >= 200
                and any("val acc" in (f.get("STATUS") or "") for _, f in m), "training", process)
        receive(sock, messages, lambda m: sum("WATCHDOG" in f for _, f in m) >= 8, "watchdog pings", process)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
        stopped_in = time.monotonic() - sent
    finally:
        killed_if_left(process)
    drain(sock, messages)
    text = output(tmp_path)
    assert status == 0, text
    assert stopped_in < STOP_LIMIT, (stopped_in, text)
    assert "Traceback" not in text
    fields = [f for _, f in messages]
    ready = next(i for i, f in enumerate(fields) if f.get("READY") == "1")
    stopping = next(i for i, f in enumerate(fields) if f.get("STOPPING") == "1")
    assert ready < stopping and "checkpoint" in fields[stopping]["STATUS"]
    assert not any("READY" in f for f in fields[stopping:])
    assert any("val acc" in (f.get("STATUS") or "") for f in fields[ready:stopping])
    # WATCHDOG=1 at least every half of WATCHDOG_USEC, counted over the run
    pings = [t for t, f in messages[ready:stopping] if f.get("WATCHDOG") == "1"]
    running_for = messages[stopping][0] - messages[ready][0]
    half = WATCHDOG_USEC / 1e6 / 2
    assert len(pings) >= int(running_for / half) - 1, (len(pings), running_for)
    print(f"\nSIGTERM to exit {stopped_in:.2f} s; {len(pings)} WATCHDOG=1 pings in {running_for:.1f} s "
          f"(WATCHDOG_USEC={WATCHDOG_USEC})")
    # the checkpoint written on SIGTERM is where it stopped
    steps = int(re.search(r"(\d+) training steps", text).group(1))
    newest = checkpoints(tmp_path)[-1]
    info = checkpoint_module.find_latest(newest.parent, load_definition("sensor_mlp")).latest
    assert info.path == newest and info.step == steps > 0
    assert f"checkpoint: {newest}" in text
    # LEDs (mock pins) went through their states; the journal says so
    leds = re.findall(r"LEDs: (\w+)", text)
    assert leds[:3] == ["starting", "collecting", "training"] and leds[-1] == "idle"

    # a restart resumes at exactly that step and trains on from it
    (tmp_path / "out.txt").write_text("")
    again = start(tmp_path, "--max-seconds", "3")
    assert again.wait(timeout=DEADLINE) == 0, output(tmp_path)
    text = output(tmp_path)
    assert f"resumed from {newest} (step {steps})" in text
    assert int(re.search(r"(\d+) training steps", text).group(1)) > steps


def test_sigkill_mid_training_resumes_from_the_newest_valid_checkpoint_with_the_store_intact(tmp_path):
    process = start(tmp_path)
    try:
        deadline = time.monotonic() + DEADLINE
        while len(checkpoints(tmp_path)) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(checkpoints(tmp_path)) >= 2, output(tmp_path)
        time.sleep(0.3)          # somewhere between two checkpoints
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        killed_if_left(process)
    store = tmp_path / "state" / "samples.db"
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        labelled = db.execute("SELECT count(*) FROM samples WHERE label IS NOT NULL").fetchone()[0]
    assert labelled > 0
    newest = checkpoint_module.find_latest(tmp_path / "state" / "checkpoints", load_definition("sensor_mlp")).latest
    (tmp_path / "out.txt").write_text("")
    again = start(tmp_path, "--max-seconds", "2")
    assert again.wait(timeout=DEADLINE) == 0, output(tmp_path)
    text = output(tmp_path)
    assert f"resumed from {newest.path} (step {newest.step})" in text
    assert int(re.search(r"(\d+) labelled samples", text).group(1)) >= labelled
    assert int(re.search(r"(\d+) training steps", text).group(1)) > newest.step


@pytest.mark.parametrize("config, fragment", [
    ('[training]\nlr = "fast"\n', "training.lr: expected a number"),
    ("[lights]\ncolour = 1\n", "lights.colour: unknown key"),
])
def test_a_config_mistake_is_one_line_and_exit_2_in_a_real_process(tmp_path, config, fragment):
    (tmp_path / "config.toml").write_text(config)
    process = start(tmp_path)
    assert process.wait(timeout=DEADLINE) == 2
    lines = output(tmp_path).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pi-backprop run: error: ") and fragment in lines[0], lines


def test_sigterm_while_the_kernels_compile_stops_at_once_and_never_says_ready(tmp_path, notify_socket):
    """The first compile takes minutes on a Zero 2 W, past systemd's TimeoutStopSec; nothing is
    there to save yet, so SIGTERM cuts it short: STOPPING=1 at once, exit 0, never READY=1."""
    pytest.importorskip("numba")
    sock, path = notify_socket
    process = start(tmp_path, notify=path, env={"PI_BACKPROP_BACKEND": "numba",
                                                "NUMBA_CACHE_DIR": str(tmp_path / "empty-cache")})
    messages = []
    try:
        wait_for_output(tmp_path, process, "loading the kernels")
        time.sleep(0.5)                                   # inside the compile now
        process.send_signal(signal.SIGTERM)
        receive(sock, messages, lambda m: any(f.get("STOPPING") == "1" for _, f in m), "STOPPING=1", process)
        status = process.wait(timeout=DEADLINE)
    finally:
        killed_if_left(process)
    drain(sock, messages)
    text = output(tmp_path)
    assert status == 0, text
    assert "Traceback" not in text
    assert "stopped while the kernels compiled: nothing to save yet" in text
    assert "kernels ready" not in text, "the compile ran to its end"
    fields = [f for _, f in messages]
    assert not any(f.get("READY") == "1" for f in fields)
    assert "nothing to save yet" in next(f for f in fields if f.get("STOPPING") == "1")["STATUS"]
    assert not checkpoints(tmp_path)


@pytest.mark.slow
def test_after_a_compile_cut_short_the_next_start_compiles_and_runs(tmp_path):
    """What the cut-short compile left in the kernel cache must not break the next start."""
    pytest.importorskip("numba")
    env = {"PI_BACKPROP_BACKEND": "numba", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    for delay in (0.5, 3.0):          # twice, at different points of the compile
        process = start(tmp_path, env=env)
        wait_for_output(tmp_path, process, "loading the kernels")
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == 0, output(tmp_path)
    (tmp_path / "out.txt").write_text("")
    again = start(tmp_path, "--max-seconds", "2", env=env)
    assert again.wait(timeout=600) == 0, output(tmp_path)
    text = output(tmp_path)
    assert "kernels ready" in text and "Traceback" not in text and "training steps" in text
