"""The service configuration: a TOML file checked against one schema.

``SCHEMA`` below is the single description of every key: its type, default, allowed range
or choices, whether a running service can apply a change on SIGHUP (``live``), and a
one-line doc. ``systemd/pi-backprop.toml`` documents the same keys for users, and a test
keeps the two in step.

    config = load_config("/etc/pi-backprop/config.toml")
    config.training.lr               # 0.001
    config["training.lr"]            # the same
    changes = diff_live(old, new)    # after SIGHUP: changes.live, changes.restart

An unknown section or key, or a value of the wrong type or out of range, raises
``ConfigError`` with one line naming ``section.key``, what is expected and what was given.
TOML has no null: "not set" is an empty string or an empty list, as each key's doc says;
a table key (``training.augment``) not set is simply left out of the file.

Some keys are checked against the model too, where the service loads it (the loader does
not): the per-class pin lists (``capture.check_pins_for_classes``) and
``training.augment`` (``augment_for_model``).
"""

import dataclasses
import math
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

from ..exc import ConfigError
from ..nn.augment import Augment
from ..storage.split import VALIDATION_FRACTION

ADC_CHIPS = ("MCP3001", "MCP3002", "MCP3004", "MCP3008", "MCP3201", "MCP3202", "MCP3204",
             "MCP3208", "MCP3301", "MCP3302", "MCP3304")
BCM_PIN = (0, 27)  # the 40-pin header's GPIO numbers


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key: ``kind`` is "str", "int", "float", "bool", "int-list" or
    "table" (names to numbers or booleans, a ``Table``; default None: not set)."""

    kind: str
    default: object
    doc: str
    live: bool = False
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    length: tuple[int, int] | None = None  # (min, max) items of an int-list

    def describe(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.choices:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        what = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                "int-list": "a list of integers",
                "table": "a table of numbers and true/false, e.g. { shift = 2, noise = 0.02 }"}[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        if self.length is not None:
            low, high = self.length
            what += f" of {low} item{'s' * (low != 1)}" if low == high else f" of {low} to {high} items"
            if bounds:
                what += ", each"
        return f"{what} {' and '.join(bounds)}".strip()


class Table(Mapping):
    """A table key's value: a read-only mapping, hashable like the rest of a ``Config``."""

    def __init__(self, items: Mapping):
        self._items = dict(items)

    def __getitem__(self, name: str) -> object:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"Table({self._items!r})"


NO_PIN = -1  # in a per-class pin list: this class has no button / LED (TOML has no null)


def _pins(doc, live=False, length=(0, 32), per_class=False):
    low = NO_PIN if per_class else BCM_PIN[0]
    return Key("int-list", (), doc, live, minimum=low, maximum=BCM_PIN[1], length=length)


# section -> key -> Key. The order here is the order of the documented default file.
SCHEMA = {
    "model": {
        "name": Key("str", "sensor_mlp", "model definition: a name from models/ or a path to a .toml file"),
        "seed": Key("int", 0, "seed for the initial weights, data order and simulated sources", minimum=0),
        "backend": Key("str", "auto", "kernel backend; auto = numba if installed, else numpy",
                       choices=("auto", "numba", "numpy")),
    },
    "source": {
        "kind": Key("str", "simulated-sensor", "where samples come from",
                    choices=("camera", "sensor", "simulated-camera", "simulated-sensor")),
        "interval": Key("float", 1.0, "seconds between samples", live=True, minimum=0.01, maximum=3600),
        "camera_resolution": Key("int-list", (320, 240), "camera stream size [width, height] in pixels",
                                 minimum=16, maximum=4096, length=(2, 2)),
        "sensor_device": Key("str", "MCP3008", "ADC chip read over SPI", choices=ADC_CHIPS),
        "sensor_channels": Key("int-list", (0,), "ADC channels read into each window",
                               minimum=0, maximum=7, length=(1, 8)),
        "sensor_spi_device": Key("int", 0, "SPI chip select of the ADC (0 = CE0, 1 = CE1)",
                                 minimum=0, maximum=1),
        "sensor_rate": Key("float", 50.0, "sensor readings per second within a window",
                           minimum=0.1, maximum=10000),
        "window": Key("int", 0, "readings per sensor window; 0 = the model's input size", minimum=0),
    },
    "labels": {
        "pins": _pins("GPIO pins of the label buttons, one per class in the model's class order "
                      "(-1: no button for that class); [] = no buttons", per_class=True),
        "mode": Key("str", "hold", "hold: label samples while a button is held; "
                    "press: label the next sample after a press", live=True, choices=("hold", "press")),
        "bounce_time": Key("float", 0.05, "button debounce time in seconds", minimum=0, maximum=1),
        "pull_up": Key("bool", True, "true for buttons wired to ground, false for buttons to 3.3 V"),
        "simulated": Key("bool", True, "simulated sources label their own samples, as if the "
                         "right button were held", live=True),
    },
    "lights": {
        "kind": Key("str", "none", "status lights: none, one LED, separate LEDs or one RGB LED",
                    choices=("none", "single", "separate", "rgb")),
        "pins": _pins("GPIO pins: single = [pin], separate = [red, green] or [red, green, blue], "
                      "rgb = [red, green, blue]", length=(0, 3)),
        "active_high": Key("bool", True, "false when the LEDs light with the pin low (common anode)"),
        "class_pins": _pins("GPIO pins of one LED per class, lit for the predicted class "
                            "(-1: no LED for that class); [] = none", per_class=True),
    },
    "training": {
        "enabled": Key("bool", True, "train on stored samples (false: only collect and predict)",
                       live=True),
        "optimizer": Key("str", "adam", "optimizer", choices=("adam", "sgd", "adamw")),
        "lr": Key("float", 0.001, "learning rate", live=True, minimum=1e-7, maximum=10),
        "momentum": Key("float", 0.9, "SGD momentum", live=True, minimum=0, maximum=0.999),
        "weight_decay": Key("float", 0.0, "weight decay: L2 for sgd, decoupled for adamw (try 0.01)",
                            live=True, minimum=0, maximum=1),
        "batch_size": Key("int", 32, "samples per training step", live=True, minimum=1, maximum=4096),
        "augment": Key("table", None, "random changes to each training batch, an [augment] table as in a model "
                       "definition (see the README); not set = the model's own, {} = none", live=True),
        "min_samples_per_class": Key("int", 10, "labelled training samples every class needs "
                                     "before training starts", live=True, minimum=1),
        "burst_steps": Key("int", 20, "training steps between two looks at the sources",
                           live=True, minimum=1, maximum=100000),
        "checkpoint_every_steps": Key("int", 200, "write a checkpoint after this many steps while new "
                                      "samples come (with none, only every checkpoint_every_seconds)",
                                      live=True, minimum=1),
        "checkpoint_every_seconds": Key("float", 300.0, "... or after this many seconds, "
                                        "whichever comes first", live=True, minimum=1),
        "min_checkpoint_seconds": Key("float", 60.0, "but never more often than this: a fast model "
                                      "would otherwise wear the SD card", live=True, minimum=0),
        "rest_after_epochs": Key("int", 100, "epochs (and at least 2000 steps) over the same samples after which "
                                 "training rests until new ones come (the SD card is spared); 0 = never rest",
                                 live=True, minimum=0),
        "keep": Key("int", 3, "checkpoints kept on disk (older ones are deleted)", live=True,
                    minimum=1, maximum=1000),
        "validation_fraction": Key("float", VALIDATION_FRACTION, "share of samples held out for validation",
                                   minimum=0, maximum=0.9),
        "max_grad_norm": Key("float", 1000.0, "a gradient norm above this counts as divergence",
                             live=True, minimum=0.001),
        "lr_backoff": Key("float", 0.5, "learning rate factor after a divergence rollback",
                          live=True, minimum=0.01, maximum=0.99),
        "max_rollbacks": Key("int", 5, "rollbacks in a row before training stops "
                             "(the service keeps predicting)", live=True, minimum=1, maximum=1000),
    },
    "store": {
        "path": Key("str", "", "sample store file; \"\" = samples.db in the state directory"),
        "max_per_class": Key("int", 500, "samples kept per class (oldest dropped first)",
                             live=True, minimum=1, maximum=1_000_000),
        "max_bytes": Key("int", 100_000_000, "sample data kept in bytes, all classes together",
                         live=True, minimum=1_000_000),
        "keep_unlabelled": Key("bool", False, "also store samples no button labelled", live=True),
        "write_every_seconds": Key("float", 5.0, "captured samples go to the card together this often: a power "
                                   "cut loses at most this much labelling, a longer time spares the card",
                                   live=True, minimum=0, maximum=600),
    },
    "predict": {
        "jsonl": Key("str", "", "append each prediction as a JSON line to this file; \"\" = none",
                     live=True),
        "jsonl_max_bytes": Key("int", 10_000_000, "rotate the JSON-lines file at this size "
                               "(one old file is kept)", live=True, minimum=10_000),
        "log_all": Key("bool", False, "log every prediction at info level (else debug)", live=True),
        "min_confidence": Key("float", 0.0, "a prediction less confident than this is reported as unsure "
                              "(the class LEDs stay dark); 0 = never unsure", live=True, minimum=0, maximum=1),
    },
    "logging": {
        "level": Key("str", "info", "log level", live=True, choices=("debug", "info", "warning", "error")),
    },
    "web": {
        "enabled": Key("bool", True, "serve the web page (live view, teaching, training) from the service"),
        "host": Key("str", "127.0.0.1", "address the page listens on: 127.0.0.1 = this Pi only (reach it with "
                    "ssh -L), 0.0.0.0 = every network the Pi is on (then a token is needed)"),
        "port": Key("int", 8474, "TCP port of the page; 0 = any free one (the log says which)",
                    minimum=0, maximum=65535),
        "fps": Key("float", 4.0, "live frames per second sent to each open page", live=True,
                   minimum=0.1, maximum=30),
        "token_file": Key("str", "", "where the page's access token is kept; \"\" = web-token in the state "
                          "directory"),
    },
    "mqtt": {
        "enabled": Key("bool", False, "publish predictions and training status to an MQTT broker "
                       "(pip install 'pi-backprop[mqtt]', or apt install python3-paho-mqtt)"),
        "host": Key("str", "localhost", "the broker's host name or address"),
        "port": Key("int", 0, "the broker's TCP port; 0 = 1883, or 8883 with tls", minimum=0, maximum=65535),
        "username": Key("str", "", "user name at the broker; \"\" = none"),
        "password_file": Key("str", "", "file holding the password (its first line), readable by the service "
                             "only; never the password itself in this file; \"\" = none"),
        "tls": Key("bool", False, "connect with TLS"),
        "ca_file": Key("str", "", "CA certificate (PEM) the broker's certificate must chain to; \"\" = the "
                       "system's"),
        "client_id": Key("str", "", "MQTT client id; \"\" = pi-backprop-<hostname>"),
        "base_topic": Key("str", "", "topic under which everything is published; \"\" = "
                          "pi-backprop/<hostname>"),
        "discovery_prefix": Key("str", "homeassistant", "Home Assistant's discovery prefix; \"\" = no "
                                "discovery messages"),
        "qos": Key("int", 0, "MQTT quality of service of what is published (0 or 1)", minimum=0, maximum=1),
        "min_interval": Key("float", 1.0, "seconds between two prediction messages at least", live=True,
                            minimum=0, maximum=3600),
        "status_interval": Key("float", 5.0, "seconds between training status messages", live=True,
                               minimum=1, maximum=3600),
        "commands": Key("bool", False, "obey commands on <base_topic>/command (pause, resume, label start "
                        "and stop)"),
    },
    "service": {
        "state_dir": Key("str", "", "state directory; \"\" = $STATE_DIRECTORY (systemd), "
                         "else ~/.local/state/pi-backprop"),
        "watchdog": Key("bool", True, "ping systemd's watchdog when the unit sets WatchdogSec="),
        "status_interval": Key("float", 5.0, "seconds between STATUS= updates to systemd",
                               live=True, minimum=0.1, maximum=3600),
        "memory_budget_mb": Key("int", 256, "MB a model, data file or image may need before it is refused "
                                "(sized for a 512 MB Pi)", minimum=16, maximum=1_000_000),
    },
}


def _section_class(section, keys):
    cls = dataclasses.make_dataclass(
        f"{section.capitalize()}Config", [(name, object) for name in keys], frozen=True)
    cls.__module__ = __name__
    return cls


_SECTION_CLASSES = {section: _section_class(section, keys) for section, keys in SCHEMA.items()}


@dataclasses.dataclass(frozen=True)
class Config:
    """A validated configuration: ``config.training.lr`` or ``config["training.lr"]``."""

    model: object
    source: object
    labels: object
    lights: object
    training: object
    store: object
    predict: object
    logging: object
    web: object
    mqtt: object
    service: object
    path: str | None = None  # the file it came from, for messages

    def __getitem__(self, dotted: str):
        section, _, key = dotted.partition(".")
        if section not in SCHEMA or key not in SCHEMA[section]:
            raise KeyError(dotted)
        return getattr(getattr(self, section), key)

    def as_dict(self) -> dict:
        """``{"section.key": value}`` for every key, in schema order."""
        return {f"{s}.{k}": self[f"{s}.{k}"] for s, keys in SCHEMA.items() for k in keys}


assert tuple(f.name for f in dataclasses.fields(Config))[:-1] == tuple(SCHEMA)


def _check_value(dotted, key, value):
    """``value`` converted to the schema's Python type (lists become tuples), or ConfigError."""
    given = value

    def bad():
        return ConfigError(f"{dotted}: expected {key.describe()}, got {given!r}")

    if key.kind == "str":
        if not isinstance(value, str):
            raise bad()
        if key.choices and value not in key.choices:
            raise bad()
        return value
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if key.kind in ("int", "float"):
        # TOML booleans are Python ints: reject them; an integer is a fine float.
        if isinstance(value, bool) or not isinstance(value, int if key.kind == "int" else (int, float)):
            raise bad()
        if key.kind == "float":
            value = float(value)
            if not math.isfinite(value):
                raise bad()
        if (key.minimum is not None and value < key.minimum) or (key.maximum is not None and value > key.maximum):
            raise bad()
        return value
    if key.kind == "table":
        # The names and ranges depend on the model's input (augment_for_model checks them).
        if not isinstance(value, dict):
            raise bad()
        for name, item in value.items():
            if not (isinstance(item, bool | int) or isinstance(item, float) and math.isfinite(item)):
                raise ConfigError(f"{dotted}.{name}: expected a number or true/false, got {item!r}")
        return Table(value)
    # int-list
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise bad()
    if key.length is not None and not key.length[0] <= len(value) <= key.length[1]:
        raise bad()
    if any((key.minimum is not None and v < key.minimum) or (key.maximum is not None and v > key.maximum)
           for v in value):
        raise bad()
    return tuple(value)


def _check_together(values, where):
    """Rules that involve more than one key."""
    lights = values["lights"]
    wanted = {"none": (0, 0), "single": (1, 1), "separate": (2, 3), "rgb": (3, 3)}[lights["kind"]]
    if not wanted[0] <= len(lights["pins"]) <= wanted[1]:
        count = str(wanted[0]) if wanted[0] == wanted[1] else f"{wanted[0]} to {wanted[1]}"
        raise ConfigError(f"{where}lights.pins: expected {count} pin{'s' * (count != '1')} "
                          f"for kind = \"{lights['kind']}\", got {list(lights['pins'])}")
    used = {}
    for dotted in ("labels.pins", "lights.pins", "lights.class_pins"):
        section, key = dotted.split(".")
        for pin in values[section][key]:
            if pin == NO_PIN:
                continue
            if pin in used:
                raise ConfigError(f"{where}{dotted}: GPIO{pin} is already used by {used[pin]}; "
                                  "give every button and LED its own pin")
            used[pin] = dotted


def augment_for_model(config: Config, definition) -> dict:
    """The ``[augment]`` table the service trains ``definition`` with: ``training.augment``
    if set ({}: none), else the definition's own. ``ConfigError`` naming
    ``training.augment.<key>`` when a key does not fit the model's input (a sensor key for a
    camera model) or a value is out of range."""
    table = config.training.augment
    if table is None:
        return dict(definition.augment)
    try:
        return Augment.from_table(dict(table), definition.input_shape, where="training.augment").to_table()
    except ConfigError as error:
        raise ConfigError(f"{config.path}: {error}" if config.path else str(error)) from None


def parse_config(document: dict, *, path: str | None = None) -> Config:
    """Validate a parsed TOML document (``dict``) against ``SCHEMA``; missing keys take defaults."""
    where = f"{path}: " if path else ""
    values = {}
    for section, content in document.items():
        if section not in SCHEMA:
            # A model definition's [augment] table goes under [training] here.
            hint = "; augmentation is [training.augment] here" if section == "augment" else ""
            raise ConfigError(f"{where}[{section}]: unknown section; expected one of "
                              + ", ".join(SCHEMA) + hint)
        if not isinstance(content, dict):
            raise ConfigError(f"{where}{section}: expected a [{section}] table, got {content!r}")
        for name, value in content.items():
            if name not in SCHEMA[section]:
                raise ConfigError(f"{where}{section}.{name}: unknown key; expected one of "
                                  + ", ".join(SCHEMA[section]))
            key = SCHEMA[section][name]
            try:
                values[(section, name)] = _check_value(f"{section}.{name}", key, value)
            except ConfigError as error:
                raise ConfigError(f"{where}{error}") from None
    full = {section: {name: values.get((section, name), key.default) for name, key in keys.items()}
            for section, keys in SCHEMA.items()}
    _check_together(full, where)
    sections = {section: _SECTION_CLASSES[section](**full[section]) for section in SCHEMA}
    return Config(**sections, path=path)


def load_config(path=None) -> Config:
    """Read and validate a TOML config file; ``None`` gives every default."""
    if path is None:
        return parse_config({})
    path = Path(path)
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (the installed default is "
                          "/etc/pi-backprop/config.toml)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable by this user (check its permissions)") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    return parse_config(document, path=str(path))


@dataclasses.dataclass(frozen=True)
class ConfigChanges:
    """What changed between two configs, as ``"section.key"`` names in schema order."""

    live: tuple[str, ...]     # a running service applies these on SIGHUP
    restart: tuple[str, ...]  # these take effect only after a restart

    def __bool__(self):
        return bool(self.live or self.restart)


def diff_live(old: Config, new: Config) -> ConfigChanges:
    """Split the keys whose values differ into those that apply live and those needing a restart."""
    old_values, new_values = old.as_dict(), new.as_dict()
    changed = [dotted for dotted in old_values if old_values[dotted] != new_values[dotted]]
    live = tuple(d for d in changed if _key(d).live)
    return ConfigChanges(live=live, restart=tuple(d for d in changed if not _key(d).live))


def _key(dotted) -> Key:
    section, key = dotted.split(".")
    return SCHEMA[section][key]


def schema_keys() -> list[str]:
    """Every ``"section.key"`` name, in schema order."""
    return [f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys]


SCHEMA = MappingProxyType({section: MappingProxyType(keys) for section, keys in SCHEMA.items()})
