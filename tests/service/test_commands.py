"""The service's command door on its own: checking, queueing, results and errors."""

import logging
import queue
import threading

import numpy as np
import pytest

from pi_backprop.exc import CommandError, ConfigError
from pi_backprop.service.commands import COMMANDS, Commands

CLASSES = ("cup", "pen")


def door():
    commands = Commands(CLASSES)
    seen = []
    for name in COMMANDS:
        commands.handle(name, lambda command, name=name: seen.append((name, command.args, command.source)) or name)
    return commands, seen


def test_label_commands_run_at_once_the_rest_wait_for_the_loop():
    commands, seen = door()
    at_once = commands.submit("label_start", source="web", label="pen", seconds=30)
    queued = commands.submit("pause", source="web")
    assert at_once.done() and at_once.result() == "label_start"
    assert seen == [("label_start", {"label": 1, "seconds": 30.0}, "web")]
    assert not queued.done()
    assert commands.run_queued() == 1
    assert queued.result(timeout=0) == "pause" and seen[-1][0] == "pause"
    assert commands.run_queued() == 0


@pytest.mark.parametrize("name, args, message", [
    ("pasue", {}, "unknown command 'pasue'; known: label_start"),
    ("label_start", {}, "label_start: missing label (arguments: label, seconds)"),
    ("pause", {"now": True}, "pause: unknown now (arguments: none)"),
    ("label_next", {"label": "mug"}, "label 'mug' is not one of the classes (cup, pen) or their indices 0..1"),
    ("label_next", {"label": 2}, "indices 0..1"),
    ("label_next", {"label": True}, "label True is not one of the classes"),
    ("label_start", {"label": 0, "seconds": 0}, "label_start: seconds must be a number > 0, got 0"),
    ("label_start", {"label": 0, "seconds": float("nan")}, "seconds must be a number > 0"),
    ("delete_sample", {"id": "7"}, "delete_sample: id must be a whole number >= 0, got '7'"),
    ("roll_back", {"step": -1}, "roll_back: step must be a whole number >= 0, got -1"),
])
def test_bad_commands_are_refused_in_the_senders_thread_with_one_line(name, args, message):
    commands, seen = door()
    with pytest.raises(CommandError) as caught:
        commands.submit(name, source="mqtt", **args)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    commands.run_queued()
    assert seen == []


def test_an_optional_argument_given_as_none_is_left_out():
    commands, seen = door()
    commands.submit("roll_back", source="web", step=None)
    commands.run_queued()
    assert seen == [("roll_back", {}, "web")]


def test_a_handlers_own_error_goes_to_the_future_a_bug_is_logged_and_wrapped(caplog):
    commands = Commands(CLASSES)
    commands.handle("reload", lambda command: (_ for _ in ()).throw(ConfigError("line 3: bad value")))
    commands.handle("checkpoint", lambda command: 1 / 0)
    reload, checkpoint = commands.submit("reload", source="SIGHUP"), commands.submit("checkpoint", source="web")
    with caplog.at_level(logging.ERROR, logger="pi_backprop"):
        assert commands.run_queued() == 2
    with pytest.raises(ConfigError, match="line 3: bad value"):
        reload.result(timeout=0)
    with pytest.raises(CommandError, match="checkpoint failed: division by zero"):
        checkpoint.result(timeout=0)
    assert "command checkpoint from web failed" in caplog.text and "line 3" not in caplog.text


def test_a_command_nobody_handles_fails_with_a_message():
    commands = Commands(CLASSES)
    future = commands.submit("resume", source="web")
    commands.run_queued()
    with pytest.raises(CommandError, match="resume: not available in this service"):
        future.result(timeout=0)


def test_close_fails_what_is_queued_and_refuses_new_commands():
    commands, seen = door()
    pending = commands.submit("delete_sample", source="web", id=4)
    commands.close()
    with pytest.raises(CommandError, match="delete_sample: the service stopped first"):
        pending.result(timeout=0)
    with pytest.raises(CommandError, match="pause: the service has stopped"):
        commands.submit("pause", source="web")
    assert seen == []


def test_a_command_queued_while_close_runs_still_fails_rather_than_waiting_forever():
    commands, seen = door()

    class ClosingQueue(queue.SimpleQueue):
        """close() happens in another thread between submit's check and its put()."""

        def put(self, item):
            commands.close()
            super().put(item)

    commands._queue = ClosingQueue()
    pending = commands.submit("pause", source="web")
    with pytest.raises(CommandError, match="pause: the service stopped first"):
        pending.result(timeout=0)
    assert seen == []


def test_waiting_for_a_queued_command_in_the_loops_own_thread_raises_instead_of_hanging():
    commands, seen = door()
    results = []

    def listener_in_the_loop(command):
        """A handler (as a listener would) that submits a queued command and waits for it."""
        future = commands.submit("checkpoint", source="web")
        with pytest.raises(CommandError, match="cannot be awaited in the service loop's own thread"):
            future.result(timeout=None)
        results.append(future)

    commands.handle("pause", listener_in_the_loop)
    commands.submit("pause", source="test")
    assert commands.run_queued() == 2              # the pause, then the checkpoint it queued
    assert results[0].done() and [name for name, *_ in seen] == ["checkpoint"]
    elsewhere = commands.submit("checkpoint", source="web")
    waited = []
    thread = threading.Thread(target=lambda: waited.append(elsewhere.result(timeout=5)))
    thread.start()
    commands.run_queued()
    thread.join(5)
    assert waited == ["checkpoint"]                 # another thread may wait as before


def test_ids_beyond_int64_are_refused_with_one_line():
    commands = Commands(CLASSES)
    with pytest.raises(CommandError, match=r"delete_sample: id must be a whole number >= 0, "
                                           r"got 9223372036854775808 \(at most 2\*\*63 - 1\)"):
        commands.submit("delete_sample", source="web", id=2**63)


def test_an_interrupted_handler_fails_its_future_and_the_interrupt_goes_on():
    commands = Commands(CLASSES)

    def interrupted(command):
        raise KeyboardInterrupt

    commands.handle("resume", interrupted)
    future = commands.submit("resume", source="web")
    with pytest.raises(KeyboardInterrupt):
        commands.run_queued()
    with pytest.raises(CommandError, match="resume: interrupted"):
        future.result(timeout=0)


def test_a_cancelled_command_is_not_run():
    commands, seen = door()
    future = commands.submit("checkpoint", source="web")
    assert future.cancel()
    commands.run_queued()
    assert seen == []


def test_class_index_takes_names_and_indices():
    commands = Commands(CLASSES)
    assert commands.class_index("pen") == 1 and commands.class_index(0) == 0
    assert type(commands.class_index(np.int64(1))) is int       # an index taken from a numpy array
    with pytest.raises(CommandError):
        commands.class_index(-1)
