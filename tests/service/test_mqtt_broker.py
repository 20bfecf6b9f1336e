"""The service and a real Mosquitto broker, heard by a subscriber as Home Assistant would
hear them: discovery, states, availability through a stop, SIGKILL and a broker restart,
wrong passwords, TLS, commands."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import test_mqtt_messages as documented
from mosquitto import DEADLINE, Broker, Subscriber, make_ca, require_mosquitto, retained
from running_service import running, wait_for, write_config

from pi_backprop.service.mqtt import paho

require_mosquitto()
pytest.importorskip("gpiozero")

BASE = "pi-backprop/test"


def mqtt_config(tmp_path, broker, **mqtt):
    keys = {"enabled": True, "host": "127.0.0.1", "port": broker.port, "base_topic": BASE, "min_interval": 0.2,
            "status_interval": 1.0, **mqtt}
    return write_config(tmp_path / "c.toml", mqtt=keys)


def heard_json(heard, topic):
    return heard.json_on(topic)


def test_the_paho_in_use_is_the_one_this_run_asks_for():
    # CI runs these tests twice: with paho-mqtt 2.x and with 1.6 (Debian bookworm's).
    expected = os.environ.get("PI_BACKPROP_EXPECT_PAHO")
    if expected is None:
        pytest.skip("PI_BACKPROP_EXPECT_PAHO is not set (CI sets it)")
    assert paho.version().startswith(expected), paho.version()


def test_discovery_states_and_availability_through_a_stop(tmp_path, caplog):
    with Broker(tmp_path / "broker") as broker, Subscriber(broker, "#") as heard:
        config = mqtt_config(tmp_path, broker)
        with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, tmp_path / "state") as service:
            wait_for(lambda: heard.last(f"{BASE}/availability") == b"online", what="online")
            wait_for(lambda: len(heard_json(heard, f"{BASE}/prediction")) >= 3, what="predictions")
            wait_for(lambda: any(s["samples"] for s in heard_json(heard, f"{BASE}/status")), what="a status")
            classes = service.definition.classes
            device = service.mqtt.settings.device
        # What Home Assistant gets on subscribing: the retained config of each entity, in the
        # keys its documentation lists.
        configs = {topic: json.loads(payload) for topic, payload, _ in heard.messages
                   if topic.startswith("homeassistant/") and topic.endswith("/config")}
        assert len(configs) == 4 and all(c["device"]["identifiers"] == [device.id] for c in configs.values())
        for topic, payload in configs.items():
            assert set(payload) <= documented.SENSOR and set(payload["device"]) <= documented.DEVICE, topic
        prediction = configs[f"homeassistant/sensor/{device.id}/prediction/config"]
        assert prediction["state_topic"] == f"{BASE}/prediction" and prediction["availability_topic"] == \
            f"{BASE}/availability"
        assert json.loads(retained(broker, f"homeassistant/sensor/{device.id}/prediction/config")) == prediction
        for payload in heard_json(heard, f"{BASE}/prediction"):
            assert payload["class"] in classes and set(payload["confidences"]) == set(classes)
            assert payload["label"] in (payload["class"], "unsure") and 0 <= payload["confidence"] <= 1
        statuses = heard_json(heard, f"{BASE}/status")
        last = [s for s in statuses if s["samples"]][-1]
        assert set(last["samples"]) == set(classes) and last["labelled"] == sum(last["samples"].values())
        assert last["state"] in ("collecting", "training", "checkpoint", "resting")
        # Stopped (as SIGTERM stops it): offline, retained, said by the service itself.
        wait_for(lambda: heard.last(f"{BASE}/availability") == b"offline", what="offline")
        assert retained(broker, f"{BASE}/availability") == b"offline"
        assert caplog.text.count("mqtt: connected to") == 1


def test_prediction_messages_keep_to_min_interval(tmp_path):
    with Broker(tmp_path / "broker") as broker, Subscriber(broker, f"{BASE}/prediction") as heard:
        # A sample every 0.01 s, predictions as often; at most one message a second here.
        config = mqtt_config(tmp_path, broker, min_interval=1.0, status_interval=60.0)
        with running(config, tmp_path / "state"):
            wait_for(lambda: heard.on(f"{BASE}/prediction"), what="a first prediction")
            time.sleep(3.0)
        times = heard.times_on(f"{BASE}/prediction")
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 2 <= len(times) <= 5 and all(gap >= 0.9 for gap in gaps), gaps   # when they arrived: a little jitter


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_or_killed_service_is_left_offline(tmp_path, sent):
    # SIGTERM (systemctl stop): the service says offline itself. SIGKILL (or a power cut):
    # the broker sends its last will.
    with Broker(tmp_path / "broker") as broker, Subscriber(broker, f"{BASE}/availability") as heard:
        config = mqtt_config(tmp_path, broker)
        child = subprocess.Popen([sys.executable, "-m", "pi_backprop", "run", "--simulate", "--config", str(config),
                                  "--state-dir", str(tmp_path / "state")], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: heard.last(f"{BASE}/availability") == b"online", timeout=120, what="online")
        finally:
            child.send_signal(sent)
            _, err = child.communicate(timeout=DEADLINE)
        wait_for(lambda: heard.last(f"{BASE}/availability") == b"offline", what="offline")
        assert retained(broker, f"{BASE}/availability") == b"offline"
        if sent == signal.SIGTERM:
            assert child.returncode == 0 and "Traceback" not in err, err


def test_a_broker_killed_and_restarted_mid_run_gets_everything_again(tmp_path, caplog):
    broker = Broker(tmp_path / "broker").start()
    try:
        config = mqtt_config(tmp_path, broker)
        with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, tmp_path / "state") as service:
            wait_for(lambda: service.mqtt.connected, what="connected")
            broker.kill()
            wait_for(lambda: not service.mqtt.connected, what="the loss noticed")
            step = service.trainer.step
            wait_for(lambda: service.trainer.step > step + 20, what="training while the broker is away")
            broker.start()                          # no persistence: it remembers nothing
            with Subscriber(broker, "#") as heard:
                wait_for(lambda: service.mqtt.connected, timeout=90, what="reconnected")
                wait_for(lambda: heard_json(heard, f"{BASE}/prediction") and heard_json(heard, f"{BASE}/status"),
                         what="messages again")
            assert retained(broker, f"{BASE}/availability") == b"online"
            assert any(t.endswith("/prediction/config") for t, _, _ in heard.messages)   # discovery again
    finally:
        broker.kill()
    text = caplog.text
    assert text.count("mqtt: connected to") == 2 and text.count(f"connection to 127.0.0.1:{broker.port} lost") == 1
    assert "messages dropped while it was away" in text


def test_a_wrong_password_is_one_line_and_training_goes_on(tmp_path, caplog):
    secret = tmp_path / "pw"
    secret.write_text("wrong\n")
    secret.chmod(0o600)
    with Broker(tmp_path / "broker", users={"pi": "right"}) as broker:
        config = mqtt_config(tmp_path, broker, username="pi", password_file=str(secret))
        with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, tmp_path / "state") as service:
            wait_for(lambda: "refused the connection" in caplog.text, what="the refusal")
            step = service.trainer.step
            wait_for(lambda: service.trainer.step > step + 20, what="training on")
            time.sleep(3.0)                          # paho tries again meanwhile: still one line
            assert not service.mqtt.connected
        refusals = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
        assert len(refusals) == 1 and "check mqtt.username and mqtt.password_file" in refusals[0], refusals
        # The right password: connected, and the broker's other users' view of it is the same.
        secret.write_text("right\n")
        with running(config, tmp_path / "state") as service, \
                Subscriber(broker, f"{BASE}/availability", username="pi", password="right") as heard:
            wait_for(lambda: heard.last(f"{BASE}/availability") == b"online", what="online with the password")


def test_tls_with_a_generated_ca(tmp_path, caplog):
    files = make_ca(tmp_path / "ca")
    with Broker(tmp_path / "broker", tls=files) as broker:
        config = mqtt_config(tmp_path, broker, tls=True, ca_file=str(files["ca"]), host="localhost")
        with running(config, tmp_path / "state") as service:
            wait_for(lambda: service.mqtt.connected, what="connected over TLS")
            wait_for(lambda: service.mqtt.published >= 2, what="messages over TLS")
        # A CA that did not sign the broker's certificate: refused, said why, and nothing sent.
        other = make_ca(tmp_path / "other")
        config = mqtt_config(tmp_path, broker, tls=True, ca_file=str(other["ca"]), host="localhost")
        with caplog.at_level(logging.WARNING, logger="pi_backprop"), running(config, tmp_path / "state") as service:
            wait_for(lambda: "cannot reach the broker" in caplog.text, what="the refusal")
            assert not service.mqtt.connected and service.mqtt.published == 0
        assert "certificate verify failed" in caplog.text


def test_tls_checks_the_brokers_host_name(tmp_path, caplog):
    files = make_ca(tmp_path / "ca", names="DNS:broker.example.invalid")   # signed, but for another name
    with Broker(tmp_path / "broker", tls=files) as broker:
        config = mqtt_config(tmp_path, broker, tls=True, ca_file=str(files["ca"]), host="localhost")
        with caplog.at_level(logging.WARNING, logger="pi_backprop"), running(config, tmp_path / "state") as service:
            wait_for(lambda: "cannot reach the broker" in caplog.text, what="the refusal")
            time.sleep(1.0)
            assert not service.mqtt.connected and service.mqtt.published == 0
    assert "certificate verify failed" in caplog.text and "localhost" in caplog.text


def test_a_broker_that_never_answers_does_not_hold_up_the_stop(tmp_path):
    # A TLS handshake with a silent listener: paho would wait its keepalive (30 s) in it.
    import socket
    files = make_ca(tmp_path / "ca")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        port = silent.getsockname()[1]
        config = write_config(tmp_path / "c.toml", mqtt={"enabled": True, "host": "localhost", "port": port,
                                                          "tls": True, "ca_file": str(files["ca"]), "base_topic": BASE})
        with running(config, tmp_path / "state") as service:
            wait_for(lambda: service.trainer.step > 20, what="training")
            started = time.monotonic()
            service.mqtt.close()
            closed_in = time.monotonic() - started
        assert closed_in < 10.0, closed_in      # well inside systemd's TimeoutStopSec (30 s)
    finally:
        silent.close()


def test_a_ca_file_that_is_no_certificate_is_one_line_and_the_service_runs(tmp_path, caplog):
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    config = write_config(tmp_path / "c.toml", mqtt={"enabled": True, "tls": True, "ca_file": str(junk)})
    with caplog.at_level(logging.ERROR, logger="pi_backprop"), running(config, tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step > 20, what="training without MQTT")
        assert service.mqtt is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "holds no usable CA certificate" in errors[0], errors


def test_an_unreachable_broker_at_start_is_reached_once_it_comes(tmp_path, caplog):
    broker = Broker(tmp_path / "broker")          # its port chosen, nothing listening yet
    try:
        config = mqtt_config(tmp_path, broker)
        with caplog.at_level(logging.INFO, logger="pi_backprop"), running(config, tmp_path / "state") as service:
            wait_for(lambda: "cannot reach the broker" in caplog.text, what="the warning")
            step = service.trainer.step
            wait_for(lambda: service.trainer.step > step + 20, what="training on")
            broker.start()
            wait_for(lambda: service.mqtt.connected, timeout=90, what="connected once it came")
        assert caplog.text.count("cannot reach the broker") == 1
    finally:
        broker.kill()


def test_commands_from_mqtt_go_through_the_command_interface(tmp_path):
    with Broker(tmp_path / "broker") as broker, Subscriber(broker, f"{BASE}/command/result") as results:
        config = write_config(tmp_path / "c.toml", labels={"simulated": False},
                              mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port, "base_topic": BASE,
                                    "commands": True})
        with running(config, tmp_path / "state") as service:
            wait_for(lambda: service.mqtt.listening.is_set(), what="subscribed to its commands")
            results.publish(f"{BASE}/command", '{"command": []}')     # malformed: answered, and MQTT lives on
            results.publish(f"{BASE}/command", "pause")
            wait_for(lambda: service.paused, what="paused from MQTT")
            start = json.dumps({"command": "label_start", "class": service.definition.classes[1], "seconds": 30})
            results.publish(f"{BASE}/command", start)
            wait_for(lambda: service.labelling.held() == {"mqtt": 1}, what="the hold from MQTT")
            results.publish(f"{BASE}/command", "label_stop")
            wait_for(lambda: service.labelling.held() == {}, what="the hold ended")
            results.publish(f"{BASE}/command", "resume")
            wait_for(lambda: not service.paused, what="resumed")
            results.publish(f"{BASE}/command", '{"command": "label_start", "class": "no such class"}')
            results.publish(f"{BASE}/command", "self-destruct")
            wait_for(lambda: len(results.json_on(f"{BASE}/command/result")) >= 7, what="seven results")
    answers = results.json_on(f"{BASE}/command/result")
    assert [a["ok"] for a in answers] == [False, True, True, True, True, False, False], answers
    assert "unknown command []" in answers[0]["error"]
    assert answers[1] == {"command": "pause", "ok": True, "result": "paused"}
    assert "is not one of the classes" in answers[5]["error"] and "unknown command" in answers[6]["error"]


def test_a_command_left_retained_on_the_broker_is_not_obeyed(tmp_path, caplog):
    # Obeyed once when it was sent, it would be obeyed again at every reconnect.
    with Broker(tmp_path / "broker") as broker, Subscriber(broker, f"{BASE}/command/result") as results:
        results.publish(f"{BASE}/command", "pause", retain=True)
        config = mqtt_config(tmp_path, broker, commands=True)
        with caplog.at_level(logging.WARNING, logger="pi_backprop"), running(config, tmp_path / "state") as service:
            wait_for(lambda: "a retained command" in caplog.text, what="the warning")
            assert not service.paused and results.on(f"{BASE}/command/result") == []


def test_commands_are_ignored_unless_turned_on(tmp_path):
    with Broker(tmp_path / "broker") as broker, Subscriber(broker, f"{BASE}/command/result") as results:
        config = mqtt_config(tmp_path, broker)
        with running(config, tmp_path / "state") as service:
            wait_for(lambda: service.mqtt.listening.is_set(), what="subscribed")
            results.publish(f"{BASE}/command", "pause")
            time.sleep(1.0)
            assert not service.paused and results.on(f"{BASE}/command/result") == []


def test_home_assistant_coming_online_gets_the_discovery_again(tmp_path):
    with Broker(tmp_path / "broker") as broker, Subscriber(broker, "homeassistant/#") as heard:
        config = mqtt_config(tmp_path, broker)
        with running(config, tmp_path / "state") as service:
            wait_for(lambda: len(heard.messages) >= 4 and service.mqtt.listening.is_set(), what="the first discovery")
            first = len(heard.messages)
            heard.publish("homeassistant/status", "online")
            wait_for(lambda: len([m for m in heard.messages if m[0].endswith("/config")]) >= first + 4,
                     what="the discovery again")
            assert service.mqtt.connected


def test_mqtt_forget_removes_the_device_and_the_retained_states(tmp_path):
    with Broker(tmp_path / "broker") as broker:
        config = mqtt_config(tmp_path, broker)
        with running(config, tmp_path / "state") as service:
            wait_for(lambda: service.mqtt.published >= 2, what="states published")
            device = service.mqtt.settings.device
        topic = f"homeassistant/sensor/{device.id}/prediction/config"
        assert retained(broker, topic) is not None
        out = subprocess.run([sys.executable, "-m", "pi_backprop", "mqtt", "forget", "--config", str(config)],
                             capture_output=True, text=True, timeout=DEADLINE)
        assert out.returncode == 0, out.stderr
        assert f"removed device {device.id}" in out.stdout
        assert retained(broker, topic) is None and retained(broker, f"{BASE}/availability") is None
        status = subprocess.run([sys.executable, "-m", "pi_backprop", "mqtt", "status", "--config", str(config)],
                                capture_output=True, text=True, timeout=DEADLINE)
        assert status.returncode == 0 and "the broker accepts the connection" in status.stdout, status.stderr
    gone = subprocess.run([sys.executable, "-m", "pi_backprop", "mqtt", "forget", "--config", str(config)],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1 and "cannot reach the MQTT broker" in gone.stderr
