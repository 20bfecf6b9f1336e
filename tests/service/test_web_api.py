"""What the web page's API does, end to end: labelling by holding a tile lands in the real
SQLite store and stops on release or when the page stops renewing it, samples are listed
and deleted, a class is cleared, pause, resume and roll back, the event stream and the
pictures. Through HTTP only, as the page (or a script) does it."""

import json
import socket
import time

import numpy as np
import pytest
from running_service import DEADLINE, checkpoint_files, running, wait_for, write_config
from web_client import Page

from pi_backprop.cli.images import decode_png
from pi_backprop.service.web import api, images
from pi_backprop.storage.store import SampleStore

pytest.importorskip("gpiozero")

NOBODY_LABELS = {"labels": {"simulated": False}}   # only the page labels


def port_of(service):
    wait_for(lambda: service.web is not None, what="the web page")
    return service.web.port


def labels_in_store(state_dir):
    with SampleStore(state_dir / "samples.db", readonly=True) as store:
        return store.load_arrays("all")[1].tolist()


def test_holding_a_tile_labels_what_is_captured_meanwhile_and_releasing_stops_it(tmp_path):
    config = write_config(tmp_path / "c.toml", store={"write_every_seconds": 0}, **NOBODY_LABELS)
    state = tmp_path / "state"
    with running(config, state) as service:
        page = Page(port_of(service))
        time.sleep(0.3)
        assert labels_in_store(state) == []                         # nobody labels: nothing is stored
        status, _, body = page.post("/api/label", {"action": "start", "class": "spikes", "page": "phone1"})
        assert status == 200 and json.loads(body) == {"label": 3, "class": "spikes"}
        wait_for(lambda: len(labels_in_store(state)) >= 10, what="samples labelled while held")
        assert page.post("/api/label", {"action": "stop", "page": "phone1"})[0] == 200
        time.sleep(0.3)
        count = len(labels_in_store(state))
        time.sleep(0.5)
        labels = labels_in_store(state)
        assert len(labels) == count and set(labels) == {3}          # released: no more
        overview = page.get_json("/api/overview")
        assert [c["samples"] for c in overview["classes"]] == [0, 0, 0, len(labels)]


def test_a_page_that_stops_renewing_its_hold_stops_labelling_by_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "HOLD_SECONDS", 0.5)   # a phone that drops off the network mid-hold
    config = write_config(tmp_path / "c.toml", store={"write_every_seconds": 0}, **NOBODY_LABELS)
    state = tmp_path / "state"
    with running(config, state) as service:
        page = Page(port_of(service))
        page.post("/api/label", {"action": "start", "class": 1, "page": "gone"})
        wait_for(lambda: labels_in_store(state), what="a labelled sample")
        time.sleep(1.0)                  # past the hold: what is stored from now on is not labelled
        count = len(labels_in_store(state))
        time.sleep(0.6)
        assert len(labels_in_store(state)) == count and service.labelling.held() == {}


def test_two_pages_hold_apart_and_one_release_ends_only_its_own(tmp_path):
    config = write_config(tmp_path / "c.toml", **NOBODY_LABELS)
    with running(config, tmp_path / "state") as service:
        page = Page(port_of(service))
        page.post("/api/label", {"action": "start", "class": 0, "page": "a"})
        page.post("/api/label", {"action": "start", "class": 0, "page": "b"})
        page.post("/api/label", {"action": "stop", "page": "a"})
        assert service.labelling.held() == {"web b": 0}


def test_a_tap_in_press_mode_labels_only_the_next_sample(tmp_path):
    config = write_config(tmp_path / "c.toml", store={"write_every_seconds": 0}, labels={"simulated": False,
                                                                                          "mode": "press"})
    state = tmp_path / "state"
    with running(config, state) as service:
        page = Page(port_of(service))
        assert page.get_json("/api/status")["label_mode"] == "press"
        assert page.post("/api/label", {"action": "next", "class": 2, "page": "p"})[0] == 200
        wait_for(lambda: labels_in_store(state), what="the tapped sample")
        time.sleep(0.5)
        assert labels_in_store(state) == [2]


def test_the_newest_samples_are_listed_and_one_deleted_is_gone_from_the_store(tmp_path):
    state = tmp_path / "state"
    with running(write_config(tmp_path / "c.toml", store={"write_every_seconds": 0}), state) as service:
        page = Page(port_of(service))
        wait_for(lambda: page.get_json("/api/overview")["classes"][0]["samples"] >= 5, what="samples of class 0")
        listed = page.get_json("/api/samples?class=still&limit=5")
        assert len(listed) == 5 and [s["id"] for s in listed] == sorted((s["id"] for s in listed), reverse=True)
        assert all(len(s["values"]) == 32 for s in listed)            # a sensor window to draw
        victim = listed[0]["id"]
        status, _, body = page.post("/api/samples/delete", {"id": victim})
        assert status == 200 and json.loads(body) == {"deleted": True}
        with SampleStore(state / "samples.db", readonly=True) as store:
            assert victim not in store.sample_ids()
        assert json.loads(page.post("/api/samples/delete", {"id": victim})[2]) == {"deleted": False}
        assert page.get("/api/samples?class=still&limit=500")[0] == 400   # bounded


def test_clearing_a_class_removes_only_its_samples(tmp_path):
    state = tmp_path / "state"
    with running(write_config(tmp_path / "c.toml", store={"write_every_seconds": 0}), state) as service:
        page = Page(port_of(service))
        wait_for(lambda: len(set(labels_in_store(state))) == 4, what="samples of every class")
        service.commands.submit("pause", source="test").result(DEADLINE)
        service.operator.enabled = False          # nobody labels while we look
        before = labels_in_store(state)
        status, _, body = page.post("/api/classes/clear", {"class": "slow_wave"})
        after = labels_in_store(state)
        assert status == 200 and json.loads(body)["deleted"] == before.count(1) > 0
        assert 1 not in after and sorted(after) == sorted(label for label in before if label != 1)


def test_pause_and_resume_from_the_page_and_going_back_to_a_checkpoint(tmp_path):
    state = tmp_path / "state"
    config = write_config(tmp_path / "c.toml", training={"checkpoint_every_steps": 30, "min_checkpoint_seconds": 0,
                                                         "checkpoint_every_seconds": 1})
    with running(config, state) as service:
        page = Page(port_of(service))
        wait_for(lambda: len(checkpoint_files(state)) >= 2, what="two checkpoints")
        assert json.loads(page.post("/api/pause")[2])["result"] == "paused"
        step = service.trainer.step
        time.sleep(0.5)
        assert service.trainer.step == step
        listed = page.get_json("/api/overview")["checkpoints"]
        assert listed == sorted(listed, key=lambda c: -c["step"]) and listed[0]["step"] <= step
        older = listed[-1]["step"]
        status, _, body = page.post("/api/rollback", {"step": older})
        assert status == 200 and json.loads(body) == {"step": older} and service.trainer.step == older
        assert page.get_json("/api/overview")["step"] == older
        page.post("/api/resume")
        wait_for(lambda: service.trainer.step > older, what="training after resume")
        history = page.get_json("/api/history")
        assert history and all(set(row) >= {"step", "loss", "val_accuracy"} for row in history)


def test_the_event_stream_sends_each_event_as_json_and_predictions_at_most_fps_a_second(tmp_path):
    config = write_config(tmp_path / "c.toml", web={"port": 0, "fps": 5})
    with running(config, tmp_path / "state") as service:
        port = port_of(service)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            data, started = b"", time.monotonic()
            while time.monotonic() - started < 3.0:
                data += sock.recv(65536)
    head, _, stream = data.partition(b"\r\n\r\n")
    assert b"200" in head.split(b"\r\n")[0] and b"text/event-stream" in head
    events = []
    for block in stream.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in lines:
            payload = json.loads(lines["data"])
            assert payload["kind"] == lines["event"] and payload["number"] == int(lines["id"])
            events.append(payload)
    kinds = {e["kind"] for e in events}
    assert {"prediction", "sample", "status"} <= kinds
    predictions = [e for e in events if e["kind"] == "prediction"]
    # 100 captures a second; the page gets at most 5 a second (3 s: 15, and the start)
    assert 3 <= len(predictions) <= 17


def test_camera_pictures_are_the_live_frame_and_the_exact_model_input(tmp_path):
    config = write_config(tmp_path / "c.toml", model={"name": "camera_cnn"},
                          source={"kind": "simulated-camera", "interval": 0.05})
    with running(config, tmp_path / "state") as service:
        page = Page(port_of(service))
        wait_for(lambda: service.live.newest() is not None, what="a capture")
        status, headers, body = page.get("/api/frame?view=camera")
        assert status == 200 and headers["content-type"] in ("image/jpeg", "image/png")
        number = int(headers["x-capture"])
        time.sleep(0.2)   # newer captures come; the one shown is still asked for by number
        assert service.live.newest().number > number
        status, headers, body = page.get(f"/api/frame?view=input&capture={number}")
        assert status == 200 and headers["content-type"] == "image/png" and int(headers["x-capture"]) == number
        shown = service.live.find(number)
        np.testing.assert_array_equal(decode_png(body), images.model_input_pixels(shown.x))   # lossless, 28×28
        assert decode_png(body).shape == (28, 28)
        time.sleep(1.0)   # 20 captures later it is gone, and the answer says what to do
        status, _, body = page.get(f"/api/frame?view=input&capture={number}")
        assert status == 404 and b"ask without capture=" in body
        assert page.get("/api/frame?view=input&capture=x")[0] == 400
        assert page.get("/api/frame?view=elsewhere")[0] == 400
        assert page.get("/api/window")[0] == 404                      # images: no window to draw


def test_keep_serving_goes_on_past_the_target_for_the_page(tmp_path, caplog):
    import logging
    with caplog.at_level(logging.INFO), running(write_config(tmp_path / "c.toml"), tmp_path / "state",
                                                max_seconds=1.0, keep_serving=True) as service:
        page = Page(port_of(service))
        wait_for(lambda: any("still serving the web page" in r.getMessage() for r in caplog.records),
                 what="the target reached")
        time.sleep(0.5)
        assert service.thread.is_alive() and page.get("/api/status")[0] == 200
    assert sum("still serving the web page" in r.getMessage() for r in caplog.records) == 1
