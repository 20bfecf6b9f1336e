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
        # A key whose default TOML cannot write (a table not set) is there as a commented-out example.
        assert set(document[section]) == {name for name, key in keys.items() if key.default is not None}, section
        for name, key in keys.items():
            # the key's own line, preceded by a comment that states live or restart
            prefix = "# " if key.default is None else ""
            index = next(i for i, line in enumerate(lines) if re.match(rf"{prefix}{name} = ", line)
                         and _section_of(lines, i) == section)
            assert lines[index - 1].startswith("# ")
            assert lines[index - 1].rstrip().endswith(("live)", "restart)")), name
            assert ("live)" in lines[index - 1]) == key.live, name
            if prefix:   # the example itself is valid
                parse_config(tomllib.loads(f"[{section}]\n{lines[index][2:]}\n"))


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
                    for k, v in keys.items() if v.default is not None} for s, keys in SCHEMA.items()}
    assert parse_config(document).as_dict() == load_config(None).as_dict()


# -- training.augment: a table, checked against the model where the service loads it ----------

def test_augment_inline_and_as_a_sub_table_are_the_same():
    inline = load_config_text('[training]\nlr = 0.01\naugment = { shift = 2, noise = 0.02 }\n')
    sub_table = load_config_text('[training]\nlr = 0.01\n\n[training.augment]\nshift = 2\nnoise = 0.02\n')
    assert inline == sub_table and inline.training.augment == {"shift": 2, "noise": 0.02}
    assert dict(inline["training.augment"]) == {"shift": 2, "noise": 0.02}
    hash(inline)   # still frozen all the way down
    assert load_config(None).training.augment is None   # not set: the model's own


def load_config_text(text):
    return parse_config(tomllib.loads(text))


def test_augment_not_set_is_the_definitions_table_and_empty_is_off():
    from pi_backprop.modeldef import ModelDefinition
    from pi_backprop.service.config import augment_for_model

    camera = ModelDefinition.from_dict({
        "name": "cam", "input_shape": [1, 8, 8], "classes": ["a", "b"], "augment": {"shift": 1, "hflip": True},
        "layers": [{"type": "flatten"}, {"type": "dense", "out_features": 2}]})
    assert augment_for_model(parse_config({}), camera) == {"shift": 1, "hflip": True}
    assert augment_for_model(parse_config({"training": {"augment": {}}}), camera) == {}
    assert augment_for_model(parse_config({"training": {"augment": {"noise": 0.05, "shift": 0}}}),
                             camera) == {"noise": 0.05}   # 0 is off, as in a definition


@pytest.mark.parametrize("model, table, message", [
    ("camera_cnn", {"time_shift": 3}, "c.toml: training.augment.time_shift: it applies to sensor windows, and this "
                                      "model's input is an image; known keys: shift, hflip, brightness,"),
    ("sensor_mlp", {"shift": 2}, "c.toml: training.augment.shift: it applies to images, and this model's input is "
                                 "a window of 32 values; known keys: time_shift, gain, noise"),
    ("camera_cnn", {"shfit": 2}, "c.toml: training.augment.shfit: unknown key; known keys: shift,"),
    ("camera_cnn", {"shift": 2.5}, "c.toml: training.augment.shift must be a whole number >= 0, got 2.5"),
    ("camera_cnn", {"hflip": 1}, "c.toml: training.augment.hflip must be true or false, got 1"),
    ("camera_cnn", {"noise": -0.1}, "c.toml: training.augment.noise must be a number from 0 to 10, got -0.1"),
])
def test_augment_keys_are_checked_against_the_models_input(model, table, message):
    from pi_backprop.modeldef import load_definition
    from pi_backprop.service.config import augment_for_model

    config = parse_config({"model": {"name": model}, "training": {"augment": table}}, path="c.toml")
    with pytest.raises(ConfigError) as caught:
        augment_for_model(config, load_definition(model))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize("document, message", [
    ({"training": {"augment": 2}}, "training.augment: expected a table of numbers and true/false, "
                                   "e.g. { shift = 2, noise = 0.02 }, got 2"),
    ({"training": {"augment": {"shift": "2"}}}, "training.augment.shift: expected a number or true/false, got '2'"),
    ({"training": {"augment": {"shift": {"x": 1}}}}, "training.augment.shift: expected a number or true/false"),
    ({"training": {"augment": {"noise": float("inf")}}}, "training.augment.noise: expected a number or true/false"),
    ({"augment": {"shift": 2}}, "[augment]: unknown section; expected one of model, source, labels, lights, "
                                "training, store, predict, logging, web, mqtt, service; augmentation is "
                                "[training.augment] here"),
])
def test_augment_that_is_no_table_of_values_is_refused_at_load(document, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(document, path="c.toml")
    assert str(caught.value).startswith("c.toml: " + message) and "\n" not in str(caught.value), str(caught.value)


def test_augment_applies_live():
    old = parse_config({"training": {"augment": {"shift": 2}}})
    assert diff_live(old, parse_config({"training": {"augment": {"shift": 3}}})).live == ("training.augment",)
    assert diff_live(old, parse_config({})).live == ("training.augment",)
    assert not diff_live(old, parse_config({"training": {"augment": {"shift": 2}}}))
