"""The unsure answer through the running service: ``[predict] min_confidence`` in the events,
the JSON lines, the STATUS= datagrams and the class LEDs (gpiozero's mock pins), and a reload.

Training is off, so the model keeps its initial weights and its confidences stay below the
threshold of 0.9 used here (the first test checks that they do).
"""

import json
import shutil
import socket
import tempfile
import threading

import pytest
from running_service import DEADLINE, running, wait_for, write_config

from pi_backprop.hardware import pins as pins_module
from pi_backprop.service.sdnotify import Notifier

pytest.importorskip("gpiozero")

CLASS_PINS = [23, 24, 25, 26]   # one LED per class of sensor_mlp
UNTRAINED = {"training": {"enabled": False}, "lights": {"class_pins": CLASS_PINS}}


class Recorder:
    """The events of one kind, kept in publishing order."""

    def __init__(self, bus, kind):
        self.events, self._lock = [], threading.Lock()
        bus.subscribe(self._got, kind)

    def _got(self, event):
        with self._lock:
            self.events.append(event)

    def after(self, number=0):
        with self._lock:
            return [e for e in self.events if e.number > number]


@pytest.fixture
def notify_socket():
    """(path, received()): a datagram socket standing in for systemd, in a short directory
    (AF_UNIX paths are limited to 107 bytes); received() drains what has arrived."""
    directory = tempfile.mkdtemp(prefix="pbu")
    path = f"{directory}/notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.setblocking(False)

    def received():
        messages = []
        while True:
            try:
                messages.append(server.recv(65536).decode())
            except BlockingIOError:
                return messages

    yield path, received
    server.close()
    shutil.rmtree(directory, ignore_errors=True)


def lit_pins(factory):
    return [pin for pin in CLASS_PINS if factory.pin(pin).state]


def test_below_min_confidence_events_json_lines_and_status_say_unsure_and_class_leds_stay_dark(
        tmp_path, notify_socket):
    address, received = notify_socket
    jsonl = tmp_path / "predictions.jsonl"
    config = write_config(tmp_path / "c.toml", **UNTRAINED, predict={"min_confidence": 0.9, "jsonl": str(jsonl)})
    with running(config, tmp_path / "state", notifier=Notifier(environ={"NOTIFY_SOCKET": address})) as service:
        predictions, statuses = Recorder(service.events, "prediction"), Recorder(service.events, "status")
        wait_for(lambda: len(predictions.after()) >= 20 and any("last: unsure (" in e.data["text"]
                                                                 for e in statuses.after()),
                 what="predictions and a status line")
        factory = pins_module.pin_factory(simulate=True)   # the service's mock pins
        history = {pin: [s.state for s in factory.pin(pin).states] for pin in CLASS_PINS}
    events = [e.data for e in predictions.after()]
    assert all(e["unsure"] and e["confidence"] < 0.9 for e in events)
    assert {e["class"] for e in events} <= set(service.definition.classes)   # the best guess is still there
    assert history == {pin: [False] for pin in CLASS_PINS}                 # never lit, not once
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) >= 20 and all(r["unsure"] is True for r in records)
    status_lines = [line for message in received() for line in message.split("\n") if line.startswith("STATUS=")]
    assert any("last: unsure (" in line for line in status_lines), status_lines


def test_a_reload_applies_a_new_min_confidence(tmp_path):
    path = write_config(tmp_path / "c.toml", **UNTRAINED)
    with running(path, tmp_path / "state") as service:
        predictions, statuses = Recorder(service.events, "prediction"), Recorder(service.events, "status")
        reloads = Recorder(service.events, "reload")
        factory = pins_module.pin_factory(simulate=True)
        wait_for(lambda: len(predictions.after()) >= 5 and lit_pins(factory), what="a lit class LED")
        write_config(path, **UNTRAINED, predict={"min_confidence": 0.9})
        service.commands.submit("reload", source="SIGHUP").result(DEADLINE)   # what SIGHUP does
        reload = reloads.after()[0]
        wait_for(lambda: len(predictions.after(reload.number)) >= 10, what="predictions after the reload")
        wait_for(lambda: any("last: unsure (" in e.data["text"] for e in statuses.after(reload.number)),
                 what="an unsure status line")
        lit_after = lit_pins(factory)
    assert reload.data["applied"] == ["predict.min_confidence"]
    before = [e.data for e in predictions.after() if e.number < reload.number]
    assert before and not any(e["unsure"] for e in before)
    assert not any("unsure" in e.data["text"] for e in statuses.after() if e.number < reload.number)
    after = [e.data for e in predictions.after(reload.number)]
    assert all(e["unsure"] for e in after) and lit_after == []
