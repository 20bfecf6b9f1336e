"""What goes over MQTT, without a broker: command parsing, payloads, Home Assistant's
discovery messages checked against the keys its documentation lists."""

import json

import pytest

from pi_backprop.exc import CommandError, ConfigError
from pi_backprop.service.mqtt import discovery, messages, settings_from
from pi_backprop.service.mqtt.messages import Topics, parse_command

# Home Assistant's documented configuration variables (home-assistant.io: MQTT Sensor, MQTT
# Button, MQTT discovery's device and origin), the ones a discovery payload may use.
COMMON = {"availability", "availability_mode", "availability_template", "availability_topic", "device",
          "enabled_by_default", "encoding", "entity_category", "icon", "json_attributes_template",
          "json_attributes_topic", "name", "object_id", "default_entity_id", "payload_available",
          "payload_not_available", "qos", "unique_id", "origin", "entity_picture"}
SENSOR = COMMON | {"device_class", "expire_after", "force_update", "last_reset_value_template", "options",
                   "suggested_display_precision", "state_class", "state_topic", "unit_of_measurement",
                   "value_template"}
BUTTON = COMMON | {"command_template", "command_topic", "device_class", "payload_press", "retain"}
DEVICE = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
          "name", "serial_number", "suggested_area", "sw_version", "via_device"}
ORIGIN = {"name", "sw_version", "support_url"}
REQUIRED = {"sensor": {"state_topic"}, "button": {"command_topic"}}
CLASSES = ("cup", "hand", "nothing")


def test_words_and_json_commands_become_service_commands():
    assert parse_command(b"pause") == ("pause", {})
    assert parse_command(b" resume\n") == ("resume", {})
    assert parse_command(b'{"command": "label_stop"}') == ("label_stop", {})
    assert parse_command(b'{"command": "label_start", "class": "cup"}') == \
        ("label_start", {"label": "cup", "seconds": messages.LABEL_SECONDS})
    assert parse_command(b'{"command": "label_start", "class": 2, "seconds": 5}') == \
        ("label_start", {"label": 2, "seconds": 5.0})


@pytest.mark.parametrize("payload, words", [
    (b"explode", "unknown command 'explode'"),
    (b'{"command": "delete_sample", "id": 3}', "unknown command 'delete_sample'"),
    (b'{"command": "label_start"}', 'needs "class"'),
    (b'{"command": "label_start", "class": "cup", "seconds": 0}', "seconds must be a number"),
    (b'{"command": "label_start", "class": "cup", "seconds": 1e9}', "seconds must be a number"),
    (b'{"command": "pause", "really": true}', "unknown key(s) really"),
    (b'{"command": ', "not valid JSON"),
    (b'["pause"]', "unknown command"),
    (b"\xff\xfe", "UTF-8"),
    (b"p" * 2000, "at most 1024 bytes"),
])
def test_bad_commands_are_one_line_errors(payload, words):
    with pytest.raises(CommandError) as caught:
        parse_command(payload)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_prediction_message_names_every_class_and_says_unsure():
    data = {"index": 0, "class": "cup", "confidence": 0.41, "unsure": True, "scores": [0.41, 0.39, 0.2],
            "label": None, "step": 120, "time": 1700000000.5}
    payload = messages.prediction_payload(data, CLASSES)
    assert payload["label"] == "unsure" and payload["class"] == "cup" and payload["unsure"] is True
    assert payload["confidences"] == {"cup": 0.41, "hand": 0.39, "nothing": 0.2}
    sure = messages.prediction_payload(dict(data, unsure=False), CLASSES)
    assert sure["label"] == "cup"
    assert json.loads(messages.encode(payload)) == payload


def test_a_prediction_of_diverged_weights_is_null_not_nan():
    data = {"index": 0, "class": "cup", "confidence": float("nan"), "unsure": False,
            "scores": [float("nan"), float("inf"), 0.5], "label": None, "step": 3, "time": 1.0}
    payload = messages.prediction_payload(data, CLASSES)
    assert payload["confidence"] is None and payload["confidences"] == {"cup": None, "hand": None, "nothing": 0.5}
    assert json.loads(messages.encode(payload)) == payload


def test_the_live_keys_are_read_from_the_config_in_force(tmp_path):
    from running_service import write_config

    from pi_backprop.service.config import load_config
    first = load_config(write_config(tmp_path / "a.toml", mqtt={"enabled": True, "min_interval": 1.0}))
    reloaded = load_config(write_config(tmp_path / "b.toml", mqtt={"enabled": True, "min_interval": 7.0,
                                                                    "status_interval": 30.0}))
    now = [first]
    settings = settings_from(first, "camera_cnn", "0.2.0", current=lambda: now[0])
    assert (settings.min_interval(), settings.status_interval()) == (1.0, 5.0)
    now[0] = reloaded                                       # what SIGHUP does to service.config
    assert (settings.min_interval(), settings.status_interval()) == (7.0, 30.0)


def test_the_default_client_id_differs_between_two_pis_of_one_name(tmp_path, monkeypatch):
    import functools

    import pi_backprop.service.mqtt as mqtt
    config = _config(tmp_path)
    ids = []
    for machine in ("a" * 32, "b" * 32):
        machine_id = tmp_path / f"machine-id-{machine[0]}"
        machine_id.write_text(machine + "\n")
        monkeypatch.setattr(mqtt, "device_id", functools.partial(messages.device_id, machine_id_file=machine_id))
        ids.append(settings_from(config, "camera_cnn", "0.2.0").client_id)
    assert ids[0] != ids[1] and all(i.startswith(f"pi-backprop-{messages.hostname_word()}-") for i in ids)


def test_the_status_message_without_an_overview_or_metrics_is_still_valid_json():
    status = messages.status_payload("collecting", {}, None, 5.0)
    assert status == {"state": "collecting", "step": None, "loss": None, "val_accuracy": None, "samples": None,
                      "labelled": None, "paused": None, "time": 5.0}
    overview = {"classes": [{"name": "cup", "samples": 3}, {"name": "hand", "samples": 4}], "step": 9,
                "state": "training", "paused": False}
    status = messages.status_payload(None, {"train_loss": float("nan"), "eval_accuracy": 0.5}, overview, 6.0)
    assert status["state"] == "training" and status["samples"] == {"cup": 3, "hand": 4} and status["labelled"] == 7
    assert status["loss"] is None and status["val_accuracy"] == 0.5
    messages.encode(status)   # no NaN reaches JSON


@pytest.mark.parametrize("commands", [False, True])
def test_discovery_payloads_use_only_home_assistants_documented_keys(commands):
    topics = Topics.under("pi-backprop/garage")
    device = discovery.Device("pi_backprop_0123456789ab", "pi-backprop garage", "camera_cnn", "0.2.0")
    sent = discovery.config_messages("homeassistant", topics, device, commands=commands)
    assert len(sent) == (6 if commands else 4)
    unique = set()
    for topic, payload in sent:
        prefix, component, node, object_id, tail = topic.split("/")
        assert (prefix, node, tail) == ("homeassistant", device.id, "config") and component in REQUIRED
        keys = SENSOR if component == "sensor" else BUTTON
        assert set(payload) <= keys, set(payload) - keys
        assert REQUIRED[component] <= set(payload)
        assert set(payload["device"]) <= DEVICE and payload["device"]["identifiers"] == [device.id]
        assert set(payload["origin"]) <= ORIGIN
        assert payload["availability_topic"] == topics.availability
        unique.add(payload["unique_id"])
        json.dumps(payload)
    assert len(unique) == len(sent)
    names = {payload["name"] for _, payload in sent}
    assert {"Prediction", "Confidence", "Training state"} <= names
    # Removal covers every entity the service may have announced, commands on or off.
    assert {topic for topic, _ in sent} <= set(discovery.removal_topics("homeassistant", topics, device))


def test_the_device_id_is_stable_and_differs_by_base_topic(tmp_path):
    machine = tmp_path / "machine-id"
    machine.write_text("0123456789abcdef0123456789abcdef\n")
    first = messages.device_id("pi-backprop/a", machine)
    assert first == messages.device_id("pi-backprop/a", machine) != messages.device_id("pi-backprop/b", machine)
    assert first.startswith("pi_backprop_") and len(first) == len("pi_backprop_") + 12


def _config(tmp_path, **keys):
    from running_service import write_config

    from pi_backprop.service.config import load_config
    return load_config(write_config(tmp_path / "c.toml", mqtt={"enabled": True, **keys}))


@pytest.mark.parametrize("keys, words", [
    ({"base_topic": "home/#"}, "mqtt.base_topic = 'home/#' is not a usable MQTT topic"),
    ({"base_topic": "/pi"}, "no empty levels"),
    ({"discovery_prefix": "ha/+/x"}, "mqtt.discovery_prefix"),
    ({"password_file": "/nonexistent/pw", "username": "pi"}, "mqtt.password_file /nonexistent/pw cannot be read"),
    ({"ca_file": "/nonexistent/ca.pem", "tls": True}, "mqtt.ca_file /nonexistent/ca.pem cannot be read"),
    ({"ca_file": "/etc/hostname"}, "mqtt.ca_file is set but mqtt.tls is false"),
])
def test_settings_that_will_not_do_are_one_line_errors(tmp_path, keys, words):
    with pytest.raises(ConfigError) as caught:
        settings_from(_config(tmp_path, **keys), "camera_cnn", "0.2.0")
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_password_comes_from_its_file_and_a_readable_file_is_warned_of(tmp_path, caplog):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nignored\n")
    secret.chmod(0o644)
    settings = settings_from(_config(tmp_path, username="pi", password_file=str(secret)), "camera_cnn", "0.2.0")
    assert settings.password == "s3cret" and settings.username == "pi"
    assert "may be read by others (mode 644): chmod 600 it" in caplog.text
    with pytest.raises(ConfigError, match="mqtt.username is not"):
        settings_from(_config(tmp_path, password_file=str(secret)), "camera_cnn", "0.2.0")
    defaults = settings_from(_config(tmp_path), "camera_cnn", "0.2.0")
    assert defaults.port == 1883 and defaults.topics.base.startswith("pi-backprop/") and defaults.password is None
    assert settings_from(_config(tmp_path, tls=True), "camera_cnn", "0.2.0").port == 8883
