"""The event bus: who gets which events, slow listeners, broken listeners."""

import json
import logging
import threading

import pytest

from pi_backprop.service.events import KINDS, EventBus


def test_subscribers_get_only_their_kinds_in_publishing_order():
    bus = EventBus()
    everything, checkpoints = [], []
    bus.subscribe(everything.append)
    bus.subscribe(checkpoints.append, kinds="checkpoint")
    bus.publish("state", state="training", previous="collecting")
    bus.publish("checkpoint", path="/x/ckpt-00000010.npz", step=10)
    bus.publish("metrics", step=10, train_loss=0.5)
    assert [e.kind for e in everything] == ["state", "checkpoint", "metrics"]
    assert [e.number for e in everything] == [1, 2, 3]
    assert [e.data for e in checkpoints] == [{"path": "/x/ckpt-00000010.npz", "step": 10}]


def test_as_dict_is_json_with_kind_number_and_the_time_it_happened():
    bus = EventBus()
    checkpoint = bus.publish("checkpoint", path="p", step=4)
    sample = bus.publish("sample", id=3, label=1, source="camera", time=12.5, **{"class": "cup"})
    sent = json.loads(json.dumps(sample.as_dict()))
    assert sent == {"kind": "sample", "number": 2, "time": 12.5, "id": 3, "label": 1, "source": "camera",
                    "class": "cup"}
    assert checkpoint.as_dict()["time"] == checkpoint.time


def test_unknown_kinds_are_refused_when_publishing_and_subscribing():
    bus = EventBus()
    with pytest.raises(ValueError, match="unknown event kind 'sampel'"):
        bus.publish("sampel", id=1)
    with pytest.raises(ValueError, match="sampel"):
        bus.subscribe(print, kinds=("sample", "sampel"))
    with pytest.raises(ValueError, match="sampel"):
        bus.listen(kinds="sampel")
    assert set(KINDS) >= {"state", "sample", "prediction", "metrics", "checkpoint"}


def test_a_failing_subscriber_is_logged_and_the_others_still_get_the_event(caplog):
    bus = EventBus()
    got = []

    def broken(event):
        raise RuntimeError("listener bug")
    bus.subscribe(broken)
    bus.subscribe(got.append)
    with caplog.at_level(logging.ERROR, logger="pi_backprop"):
        bus.publish("status", text="ok", step=1, samples=2)
    assert [e.kind for e in got] == ["status"]
    assert "a listener of status events failed" in caplog.text and "listener bug" in caplog.text


def test_unsubscribe_stops_delivery():
    bus = EventBus()
    got = []
    bus.subscribe(got.append)
    bus.publish("status", text="a")
    bus.unsubscribe(got.append)
    bus.publish("status", text="b")
    assert [e.data["text"] for e in got] == ["a"]


def test_a_slow_listener_loses_the_oldest_events_and_counts_them():
    bus = EventBus()
    with bus.listen(kinds=("metrics",), maxsize=3) as inbox:
        for step in range(5):
            bus.publish("metrics", step=step)
            bus.publish("status", text="not for this listener")
        assert inbox.dropped == 2
        assert [inbox.get(timeout=0).data["step"] for _ in range(3)] == [2, 3, 4]
        assert inbox.get(timeout=0) is None
    bus.publish("metrics", step=9)     # closed: nothing more arrives
    assert inbox.get(timeout=0) is None


def test_a_listener_in_another_thread_wakes_on_the_next_event():
    bus = EventBus()
    inbox = bus.listen(kinds="checkpoint")
    got = []
    reader = threading.Thread(target=lambda: got.append(inbox.get(timeout=30)))
    reader.start()
    bus.publish("checkpoint", path="p", step=4)
    reader.join(30)
    assert not reader.is_alive() and got[0].data["step"] == 4
    inbox.close()


def test_an_event_published_by_a_subscriber_reaches_everyone_after_the_one_that_caused_it():
    bus = EventBus()
    seen = []

    def lights(event):
        if event.kind == "state":
            bus.publish("lights", state=event.data["state"], text="green")
    bus.subscribe(lights)
    bus.subscribe(lambda event: seen.append((event.kind, event.number)))
    bus.publish("state", state="training", previous=None)
    bus.publish("status", text="after")
    assert seen == [("state", 1), ("lights", 2), ("status", 3)]
