"""`pi-backprop train` as a real process: SIGTERM/SIGINT stop it cleanly, and SIGKILL at random
moments (between and during checkpoint writes) never leaves a broken checkpoint nor changes
the result."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop.storage import checkpoint as ckpt
from pi_backprop.training.datasets import open_dataset
from pi_backprop.training.trainer import Trainer

# numpy backend in the child: no JIT compile time, and the in-process reference uses it too.
ENV = dict(os.environ, PI_BACKPROP_BACKEND="numpy", PYTHONUNBUFFERED="1")
ENV.pop("JOURNAL_STREAM", None)

# Wide enough that a checkpoint (parameters + two Adam moments, ~3.4 MB) takes longer to write
# than a training step: random kills then often land inside a write.
WIDE_MODEL = """
name = "wide_sensor"
input_shape = [32]
classes = ["still", "slow_wave", "fast_wave", "spikes"]
[[layers]]
type = "dense"
out_features = 512
[[layers]]
type = "relu"
[[layers]]
type = "dense"
out_features = 512
[[layers]]
type = "relu"
[[layers]]
type = "dense"
out_features = 4
"""


def train_command(model, directory, steps, *extra):
    return [sys.executable, "-m", "pi_backprop", "train", "--model", str(model), "--data", "sim:sensor?n=400",
            "--steps", str(steps), "--checkpoint-dir", str(directory), "--batch-size", "16", *extra]


def wait_for_progress(process):
    """Read stdout until the first progress line; return the lines read."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("step "):
            return lines
    raise AssertionError(f"no progress line; got {lines!r} and {process.stderr.read()!r}")


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_stops_after_a_step_with_a_checkpoint(tmp_path, sent):
    """SIGHUP is a lost SSH session: the same command resumes, so it stops as for Ctrl-C."""
    command = train_command("sensor_mlp", tmp_path, 10_000_000, "--checkpoint-every", "100000", "--eval-every", "20")
    # A terminal session's SIGHUP: when the suite itself runs under nohup, its children inherit
    # an ignored SIGHUP, which train rightly keeps ignoring.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        wait_for_progress(process)
        sent_at = time.monotonic()
        process.send_signal(sent)
        out, err = process.communicate(timeout=120)   # generous: a loaded CI machine
        seconds = time.monotonic() - sent_at
    finally:
        process.kill()
    assert process.returncode == 0, err
    stopped = [line for line in out.splitlines() if line.startswith("stopped by")]
    assert len(stopped) == 1, out
    step = int(stopped[0].split(" at step ")[1].split()[0])
    path = tmp_path / ckpt.checkpoint_name(step)
    assert stopped[0] == f"stopped by {sent.name} at step {step} of 10000000; checkpoint {path}"
    assert out.splitlines()[-1] == (
        f"to resume: pi-backprop train --model sensor_mlp --data 'sim:sensor?n=400' --steps 10000000 "
        f"--checkpoint-dir {tmp_path} --checkpoint-every 100000 --eval-every 20 --batch-size 16")
    assert ckpt.verify_checkpoint(path).step == step >= 20
    assert "Traceback" not in err
    print(f"{sent.name}: exited {seconds:.2f} s after the signal")


def test_under_nohup_sighup_stays_ignored(tmp_path):
    command = train_command("sensor_mlp", tmp_path, 10_000_000, "--checkpoint-every", "100000", "--eval-every", "20")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))   # as nohup does
    try:
        wait_for_progress(process)
        process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert process.poll() is None                     # the SSH session went; the run goes on
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0 and "stopped by SIGTERM" in out, err


def reference_state(model_path, steps):
    previous = pb.nn.backend.current
    pb.set_backend("numpy")
    try:
        definition = pb.load_definition(model_path)
        with Trainer(definition, open_dataset("sim:sensor?n=400", definition), None, batch_size=16) as t:
            t.run(steps)
            return definition, t.model.parameter_vector.copy(), {k: v.copy() for k, v in t.optimizer.buffers.items()}
    finally:
        pb.nn.backend.current = previous


def newest_step(directory):
    files = ckpt.checkpoint_files(directory)
    return ckpt.step_of(files[0]) if files else 0


def kill_after_progress(process, directory, rng):
    """Wait until the run writes a new checkpoint, then SIGKILL it a random 0-40 ms later
    (often inside the next step or checkpoint write). False if it finished first.

    The window is short so that each kill costs a few steps only, however fast the machine:
    16 kills must fit in one run."""
    before, deadline = newest_step(directory), time.monotonic() + 120
    while newest_step(directory) == before:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.04))
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def test_random_sigkills_leave_valid_checkpoints_and_an_identical_result(tmp_path):
    model_path = tmp_path / "wide_sensor.toml"
    model_path.write_text(WIDE_MODEL)
    steps, directory = 120, tmp_path / "run"
    command = train_command(model_path, directory, steps, "--checkpoint-every", "2", "--eval-every", "1000")
    rng = np.random.default_rng(0)
    kills, during_write, progress = 0, 0, []
    for _ in range(16):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        if not kill_after_progress(process, directory, rng):
            break
        kills += 1
        during_write += bool(ckpt.temp_files(directory))
        for path in ckpt.checkpoint_files(directory):     # every checkpoint left after a kill is intact
            ckpt.verify_checkpoint(path)
        progress.append(newest_step(directory))
    final = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120)
    assert final.returncode == 0, final.stderr
    assert "Traceback" not in final.stderr
    print(f"{kills} kills, {during_write} inside a checkpoint write; newest step after each: {progress}")
    assert kills >= 12   # each kill interrupted a run that had just made progress
    definition, parameters, buffers = reference_state(model_path, steps)
    info = ckpt.find_latest(directory, definition).latest
    assert info.step == steps
    model = definition.build(seed=1)
    optimizer = pb.Adam(model)
    ckpt.load_into(info, model, optimizer)
    assert model.parameter_vector.tobytes() == parameters.tobytes()
    for name, buffer in buffers.items():
        assert optimizer.buffers[name].tobytes() == buffer.tobytes()
    assert optimizer.step_count == steps
    assert not ckpt.temp_files(directory)


# Runs `pi-backprop train` with os.fsync wrapped to SIGKILL the process at its n-th call: a
# death at an exact point of the write path (before the rename, between rename and directory
# fsync, while pruning), without any test hook in the product.
KILL_AT_FSYNC = """
import os, runpy, signal, sys
calls, real_fsync, target = [0], os.fsync, int(os.environ["KILL_AT_FSYNC"])
def fsync(fd):
    calls[0] += 1
    if calls[0] == target:
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync
sys.argv = ["pi-backprop", *sys.argv[1:]]
runpy.run_module("pi_backprop", run_name="__main__")
"""


@pytest.fixture(scope="module")
def sensor_reference():
    return reference_state("sensor_mlp", 30)


# Per checkpoint: fsync of the temp file, of the directory after the rename, and (from the
# 4th checkpoint, keep 3) of the directory after pruning.
@pytest.mark.parametrize("kill_at, temp_left", [(1, True), (2, False), (7, True), (9, False), (10, True), (12, False)])
def test_kill_inside_a_checkpoint_write(tmp_path, sensor_reference, kill_at, temp_left):
    argv = train_command("sensor_mlp", tmp_path, 30, "--checkpoint-every", "5")[3:]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_FSYNC, *argv], capture_output=True, text=True,
                            env=dict(ENV, KILL_AT_FSYNC=str(kill_at)), timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert bool(ckpt.temp_files(tmp_path)) == temp_left
    for path in ckpt.checkpoint_files(tmp_path):
        ckpt.verify_checkpoint(path)
    final = subprocess.run([sys.executable, "-m", "pi_backprop", *argv], capture_output=True, text=True,
                           env=ENV, timeout=120)
    assert final.returncode == 0, final.stderr
    assert not ckpt.temp_files(tmp_path)
    definition, parameters, buffers = sensor_reference
    info = ckpt.find_latest(tmp_path, definition).latest
    model = definition.build(seed=1)
    optimizer = pb.Adam(model)
    ckpt.load_into(info, model, optimizer)
    assert info.step == 30 and model.parameter_vector.tobytes() == parameters.tobytes()
    assert all(optimizer.buffers[k].tobytes() == v.tobytes() for k, v in buffers.items())


def test_a_reader_that_leaves_stops_the_run_with_a_final_checkpoint(tmp_path):
    """``pi-backprop train ... | head -1``: the pipe breaks at the next progress line."""
    command = train_command("sensor_mlp", tmp_path, 10_000_000, "--checkpoint-every", "100000", "--eval-every", "20")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_for_progress(process)
        process.stdout.close()                 # as head does once it has its line
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    files = ckpt.checkpoint_files(tmp_path)
    assert files, "no final checkpoint"
    info = ckpt.verify_checkpoint(files[-1])
    assert 20 <= info.step < 100_000                 # the stop's checkpoint, not a scheduled one
