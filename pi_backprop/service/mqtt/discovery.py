"""Home Assistant's MQTT discovery: the retained config messages that make the service a
device with entities in Home Assistant, and the empty ones that remove them.

Each goes to ``<prefix>/<component>/<device id>/<object id>/config`` (Home Assistant's
documented layout); the entities read the state topics of ``messages``:

- sensor **Prediction**: the label ("unsure" below the threshold); the per-class
  confidences are its attributes
- sensor **Confidence** (%), sensor **Training state** (its attributes: step, loss,
  validation accuracy, samples per class), sensor **Training step** (diagnostic)
- with ``mqtt.commands``: buttons **Pause training** and **Resume training**

All are unavailable while ``<base>/availability`` says offline (the last will included).
"""

import dataclasses

from .messages import Topics


@dataclasses.dataclass(frozen=True)
class Device:
    """id: stable unique id; name: what Home Assistant shows; model: the model definition's
    name; version: pi-backprop's."""

    id: str
    name: str
    model: str
    version: str

    def as_config(self) -> dict:
        return {"identifiers": [self.id], "name": self.name, "model": f"{self.model} (pi-backprop)",
                "manufacturer": "pi-backprop", "sw_version": self.version}


def _entities(topics: Topics, commands: bool) -> list[tuple[str, str, dict]]:
    """(component, object id, the entity's own keys)."""
    entities = [
        ("sensor", "prediction", {"name": "Prediction", "state_topic": topics.prediction,
                                  "value_template": "{{ value_json.label }}", "icon": "mdi:eye",
                                  "json_attributes_topic": topics.prediction,
                                  "json_attributes_template": "{{ value_json.confidences | tojson }}"}),
        ("sensor", "confidence", {"name": "Confidence", "state_topic": topics.prediction,
                                  "value_template": "{{ (value_json.confidence * 100) | round(1) "
                                                    "if value_json.confidence is number else None }}",
                                  "unit_of_measurement": "%", "state_class": "measurement",
                                  "icon": "mdi:gauge"}),
        ("sensor", "training_state", {"name": "Training state", "state_topic": topics.status,
                                      "value_template": "{{ value_json.state }}", "icon": "mdi:school",
                                      "json_attributes_topic": topics.status}),
        ("sensor", "training_step", {"name": "Training step", "state_topic": topics.status,
                                     "value_template": "{{ value_json.step }}", "entity_category": "diagnostic",
                                     "icon": "mdi:counter"}),
    ]
    if commands:
        entities += [
            ("button", "pause", {"name": "Pause training", "command_topic": topics.command,
                                 "payload_press": "pause", "icon": "mdi:pause"}),
            ("button", "resume", {"name": "Resume training", "command_topic": topics.command,
                                  "payload_press": "resume", "icon": "mdi:play"}),
        ]
    return entities


def config_topic(prefix: str, component: str, device: Device, object_id: str) -> str:
    return f"{prefix}/{component}/{device.id}/{object_id}/config"


def config_messages(prefix: str, topics: Topics, device: Device, *, commands: bool) -> list[tuple[str, dict]]:
    """``[(topic, payload)]``: one retained config message per entity."""
    messages = []
    for component, object_id, keys in _entities(topics, commands):
        payload = {**keys, "unique_id": f"{device.id}_{object_id}",
                   "default_entity_id": f"{component}.{device.id}_{object_id}",
                   "availability_topic": topics.availability, "payload_available": "online",
                   "payload_not_available": "offline", "device": device.as_config(),
                   "origin": {"name": "pi-backprop", "sw_version": device.version}}
        messages.append((config_topic(prefix, component, device, object_id), payload))
    return messages


def removal_topics(prefix: str, topics: Topics, device: Device) -> list[str]:
    """Every config topic this service may have published (commands on or off), to be sent
    an empty retained message, which removes the entity."""
    return [config_topic(prefix, component, device, object_id)
            for component, object_id, _ in _entities(topics, commands=True)]
