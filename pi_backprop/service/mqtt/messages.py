"""What goes over MQTT, as pure functions: the topics, the payloads, the commands read back.

Under ``base`` (``mqtt.base_topic``, default ``pi-backprop/<hostname>``)::

    <base>/availability     online | offline    retained; "offline" is also the last will, which
                                                the broker sends when the service dies
    <base>/prediction       JSON, retained      label ("unsure" below predict.min_confidence),
                                                class (the best guess), confidence, unsure,
                                                confidences {class: p}, step, time
    <base>/status           JSON, retained      state, step, loss, val_accuracy, samples
                                                {class: n}, labelled, paused, time
    <base>/command          what the service obeys when mqtt.commands = true (see parse_command)
    <base>/command/result   JSON                command, ok, and result or error
"""

import dataclasses
import hashlib
import json
import math
import re
import socket
from pathlib import Path

from ...exc import CommandError, ConfigError

# Commands MQTT may send, and the command interface's name for each.
COMMANDS = {"pause": "pause", "resume": "resume", "label_start": "label_start", "label_stop": "label_stop"}
LABEL_SECONDS = 60.0        # a label_start without seconds ends by itself after this (a lost stop)
MAX_LABEL_SECONDS = 3600.0
MAX_PAYLOAD = 1024          # bytes of a command message; longer ones are refused unread
_TOPIC_WORD = re.compile(r"[^A-Za-z0-9_-]+")


@dataclasses.dataclass(frozen=True)
class Topics:
    """The topics under ``base`` (see the module's docstring): ``Topics.under(base)``."""

    base: str
    availability: str
    prediction: str
    status: str
    command: str
    command_result: str

    @classmethod
    def under(cls, base: str) -> "Topics":
        leaves = ("availability", "prediction", "status", "command", "command/result")
        return cls(base, *(f"{base}/{leaf}" for leaf in leaves))


def hostname_word() -> str:
    """This machine's host name as one topic-safe word."""
    return _TOPIC_WORD.sub("_", socket.gethostname()) or "pi"


def checked_topic(value: str, key: str) -> str:
    """``value`` as a topic prefix (no wildcards, no empty levels), or a one-line ConfigError."""
    if not value or "+" in value or "#" in value or "\0" in value or "" in value.split("/"):
        raise ConfigError(f"{key} = {value!r} is not a usable MQTT topic: no + or #, no empty levels "
                          "(no leading, trailing or double /)")
    return value


def device_id(base_topic: str, machine_id_file: Path = Path("/etc/machine-id")) -> str:
    """A stable id for this service on this machine: from systemd's machine id (the host name
    where there is none) and the base topic, so two services on one Pi differ."""
    try:
        machine = machine_id_file.read_text(encoding="ascii").strip()
    except OSError:
        machine = ""
    digest = hashlib.sha256(f"{machine or socket.gethostname()}\n{base_topic}".encode()).hexdigest()
    return f"pi_backprop_{digest[:12]}"


def label_of(data: dict) -> str:
    """What a ``prediction`` event's data says, as Home Assistant shows it: a class or "unsure"."""
    return "unsure" if data["unsure"] else data["class"]


def prediction_payload(data: dict, class_names) -> dict:
    """The prediction message for a ``prediction`` event's data."""
    confidences = {name: _number(p, 4) for name, p in zip(class_names, data["scores"])}
    return {"label": label_of(data), "class": data["class"],
            "confidence": _number(data["confidence"], 4), "unsure": bool(data["unsure"]),
            "confidences": confidences, "step": data["step"], "time": data["time"]}


def status_payload(state: str | None, metrics: dict, overview: dict | None, now: float) -> dict:
    """The training status message: ``state`` (the newest state event's), ``metrics`` (the
    newest metrics event's data, or {}), ``overview`` (the service's overview, or None)."""
    samples = {c["name"]: c["samples"] for c in overview["classes"]} if overview else None
    step = metrics.get("step") if overview is None else overview["step"]
    return {"state": state if state is not None else (overview or {}).get("state"), "step": step,
            "loss": _number(metrics.get("train_loss")), "val_accuracy": _number(metrics.get("eval_accuracy")),
            "samples": samples, "labelled": None if samples is None else sum(samples.values()),
            "paused": None if overview is None else bool(overview["paused"]), "time": now}


def _number(value, digits=6):
    """A finite number rounded, or None (JSON has no NaN: diverged weights give one)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def parse_command(payload: bytes) -> tuple[str, dict]:
    """``(command name, arguments)`` from a command message, or a one-line CommandError.

    A word (``pause``, ``resume``, ``label_stop``) or JSON: ``{"command": "label_start",
    "class": "cup", "seconds": 30}`` (``class`` a name or an index; ``seconds`` default
    LABEL_SECONDS, at most MAX_LABEL_SECONDS: a label held from MQTT ends by itself).
    """
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"a command is at most {MAX_PAYLOAD} bytes, got {len(payload)}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError("a command must be UTF-8 text") from None
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError as error:
            raise CommandError(f"the command is not valid JSON ({error})") from None
        if not isinstance(body, dict):
            raise CommandError("a JSON command must be an object")
    else:
        body = {"command": text}
    name = body.get("command")
    if not isinstance(name, str) or name not in COMMANDS:
        raise CommandError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    unknown = sorted(set(body) - {"command", "class", "seconds"})
    if unknown:
        raise CommandError(f"{name}: unknown key(s) {', '.join(unknown)}")
    if name != "label_start":
        return COMMANDS[name], {}
    if "class" not in body:
        raise CommandError('label_start needs "class" (a class name or index)')
    seconds = body.get("seconds", LABEL_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_LABEL_SECONDS:
        raise CommandError(f"label_start: seconds must be a number in (0, {MAX_LABEL_SECONDS:g}], got {seconds!r}")
    return "label_start", {"label": body["class"], "seconds": float(seconds)}
