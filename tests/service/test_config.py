"""Service config: schema validation, one-line errors naming the key, live/restart diff."""

import re
import tomllib
from pathlib import Path

import pytest

from pi_backprop.exc import ConfigError
from pi_backprop.service.config import SCHEMA, ConfigChanges, diff_live, load_config, parse_config, schema_keys

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "systemd" / "pi-backprop.toml"


def test_defaults():
    config = load_config(None)
    assert config.training.lr == 0.001
    assert config["store.max_per_class"] == 500
    assert config.source.camera_resolution == (320, 240)
    assert config.labels.pins == ()
    assert list(config.as_dict()) == schema_keys()
    assert config == parse_config({})


def test_installed_default_file_loads_to_the_schema_defaults():
    assert load_config(DEFAULT_FILE).as_dict() == load_config(None).as_dict()


def test_installed_default_file_documents_every_key():
    text = DEFAULT_FILE.read_text()
    document = tomllib.loads(text)
    lines = text.splitlines()
    for section, keys in SCHEMA.items():
        assert set(document[section]) == set(keys), section
        for name in keys:
            # the key's own line, preceded by a comment that states live or restart
            index = next(i for i, line in enumerate(lines) if re.match(rf"{name} = ", line)
                         and _section_of(lines, i) == section)
            assert lines[index - 1].startswith("# ")
            assert lines[index - 1].rstrip().endswith(("live)", "restart)")), name
            assert ("live)" in lines[index - 1]) == keys[name].live, name


def _section_of(lines, index):
    for line in reversed(lines[:index]):
        if line.startswith("["):
            return line.strip("[]\n ")
    return None


def test_minus_one_means_no_pin_for_that_class():
    config = parse_config({"labels": {"pins": [17, -1, 27]}, "lights": {"class_pins": [-1, 5, -1]}})
    assert config.labels.pins == (17, -1, 27) and config.lights.class_pins == (-1, 5, -1)


def test_values_are_converted():
    config = parse_config({"training": {"lr": 1, "checkpoint_every_seconds": 60},
                           "labels": {"pins": [17, 27]}})
    assert config.training.lr == 1.0 and isinstance(config.training.lr, float)
    assert config.labels.pins == (17, 27)
    hash(config)  # frozen all the way down


@pytest.mark.parametrize("document, message", [
    ({"training": {"lr": -1}}, "training.lr: expected a number >= 1e-07 and <= 10, got -1"),
    ({"training": {"lr": "fast"}}, "training.lr: expected a number >= 1e-07 and <= 10, got 'fast'"),
    ({"training": {"lr": float("nan")}}, "training.lr: expected a number"),
    ({"training": {"batch_size": 2.5}}, "training.batch_size: expected an integer >= 1 and <= 4096, got 2.5"),
    ({"training": {"batch_size": True}}, "training.batch_size: expected an integer"),
    ({"training": {"enabled": 1}}, "training.enabled: expected true or false, got 1"),
    ({"source": {"kind": "webcam"}}, 'source.kind: expected one of "camera", "sensor", '
                                     '"simulated-camera", "simulated-sensor", got \'webcam\''),
    ({"source": {"camera_resolution": [640]}}, "source.camera_resolution: expected a list of integers of 2 items"),
    ({"source": {"sensor_channels": [8]}}, "source.sensor_channels: expected a list of integers of 1 to 8 items, "
                                           "each >= 0 and <= 7, got [8]"),
    ({"labels": {"pins": [17, "18"]}}, "labels.pins: expected a list of integers"),
    ({"labels": {"pins": 17}}, "labels.pins: expected a list of integers"),
    ({"training": {"lrate": 0.1}}, "training.lrate: unknown key; expected one of enabled, optimizer, lr,"),
    ({"trainer": {}}, "[trainer]: unknown section; expected one of model, source,"),
    ({"training": 3}, "training: expected a [training] table, got 3"),
    ({"lights": {"kind": "rgb", "pins": [5, 6]}}, 'lights.pins: expected 3 pins for kind = "rgb", got [5, 6]'),
    ({"lights": {"kind": "single"}}, 'lights.pins: expected 1 pin for kind = "single", got []'),
    ({"lights": {"kind": "none", "pins": [5]}}, 'lights.pins: expected 0 pins for kind = "none"'),
    ({"labels": {"pins": [17, 27]}, "lights": {"kind": "single", "pins": [27]}},
     "lights.pins: GPIO27 is already used by labels.pins"),
    ({"lights": {"kind": "separate", "pins": [5, 6, 13, 19]}}, "lights.pins: expected a list of integers of 0 to 3"),
    ({"lights": {"kind": "single", "pins": [-1]}}, "lights.pins: expected a list of integers of 0 to 3 items, "
                                                   "each >= 0 and <= 27, got [-1]"),
    ({"labels": {"pins": [-2]}}, "labels.pins: expected a list of integers of 0 to 32 items, each >= -1"),
])
def test_bad_values_name_the_key(document, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(document, path="c.toml")
    text = str(caught.value)
    assert text.startswith("c.toml: " + message), text
    assert "\n" not in text


@pytest.mark.parametrize("content, message", [
    (None, "no such config file"),
    ("[training\nlr = 1\n", "not valid TOML"),
    ("[training]\nlr = 1\nlr = 2\n", "not valid TOML"),
    (b"\xff\xfe", "not valid TOML"),
])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "config.toml"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_diff_live_splits_changes():
    old = load_config(None)
    new = parse_config({"training": {"lr": 0.01, "optimizer": "sgd"}, "logging": {"level": "debug"},
                        "source": {"kind": "camera"}})
    changes = diff_live(old, new)
    assert changes == ConfigChanges(live=("training.lr", "logging.level"),
                                    restart=("source.kind", "training.optimizer"))
    assert changes
    assert not diff_live(old, parse_config({}))


def test_every_key_has_a_doc_and_a_valid_default():
    for dotted in schema_keys():
        section, name = dotted.split(".")
        key = SCHEMA[section][name]
        assert key.doc and "\n" not in key.doc, dotted
    # the defaults themselves pass validation (parse_config({}) re-checks the cross-key rules)
    document = {s: {k: list(v.default) if isinstance(v.default, tuple) else v.default
                    for k, v in keys.items()} for s, keys in SCHEMA.items()}
    assert parse_config(document).as_dict() == load_config(None).as_dict()
