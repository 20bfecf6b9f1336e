"""paho-mqtt, 1.6 (Debian bookworm's ``python3-paho-mqtt``) or 2.x (PyPI), behind one face.

    client = new_client(client_id, on_connect=..., on_disconnect=..., on_message=...)

The callbacks get plain values whichever paho is installed: ``on_connect(ok, why)`` (``why``
a sentence: "not authorised", ...), ``on_disconnect(why)`` (None when we asked for it),
``on_message(topic, payload bytes, retained)``. A callback that raises is logged, never
passed on: paho would end its network thread for it.
"""

import functools
import importlib
import logging

from ...exc import ConfigError

INSTALL_HINT = "pip install 'pi-backprop[mqtt]' (or sudo apt install python3-paho-mqtt)"

# MQTT 3.1.1 CONNACK return codes (paho 1.6 passes these ints).
_REFUSED = {1: "the broker does not speak MQTT 3.1.1", 2: "the broker refused the client id",
            3: "the broker is unavailable", 4: "bad user name or password", 5: "not authorised"}


def import_paho():
    """The ``paho.mqtt.client`` module, or a one-line ``ConfigError`` naming the extra."""
    try:
        return importlib.import_module("paho.mqtt.client")
    except ImportError as error:
        raise ConfigError(f"mqtt.enabled needs paho-mqtt ({error}): {INSTALL_HINT}") from None


def version() -> str:
    return getattr(importlib.import_module("paho.mqtt"), "__version__", "?")


def new_client(client_id: str, *, on_connect, on_disconnect, on_message, on_subscribe=None):
    """A paho ``Client`` (MQTT 3.1.1, clean session) with the callbacks adapted as above;
    ``on_subscribe()`` when the broker has acknowledged a subscription."""
    mqtt = import_paho()
    on_connect, on_disconnect, on_message = (_logged(f) for f in (on_connect, on_disconnect, on_message))
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:    # paho 2.x
        client = mqtt.Client(callback_api_version=api.VERSION2, client_id=client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        client.on_connect = lambda c, u, flags, reason, props=None: on_connect(*_outcome(reason))
        client.on_disconnect = lambda c, u, flags, reason, props=None: on_disconnect(_lost(reason))
    else:                  # paho 1.6
        client = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
        client.on_connect = lambda c, u, flags, rc: on_connect(*_outcome(rc))
        client.on_disconnect = lambda c, u, rc: on_disconnect(None if rc == 0 else mqtt.error_string(rc))
    client.on_message = lambda c, u, message: on_message(message.topic, bytes(message.payload), bool(message.retain))
    if on_subscribe is not None:
        subscribed = _logged(on_subscribe)
        client.on_subscribe = lambda *args: subscribed()
    client.suppress_exceptions = True
    return client


def _logged(callback):
    @functools.wraps(callback)
    def guarded(*args):
        try:
            return callback(*args)
        except Exception:   # noqa: BLE001 - the connection must outlive one bad message
            logging.getLogger("pi_backprop.service.mqtt").exception("mqtt: a callback failed (%s)",
                                                                     getattr(callback, "__name__", callback))
    return guarded


def _code(reason) -> int:
    """The numeric code of a paho 2.x ``ReasonCode`` or a paho 1.6 int."""
    return int(getattr(reason, "value", reason))


def _outcome(reason) -> tuple[bool, str | None]:
    code = _code(reason)
    if code == 0:
        return True, None
    # paho 2.x speaks MQTT 5 reason codes even on 3.1.1 (134: bad user name or password, 135: not authorised).
    known = {134: 4, 135: 5, 136: 3, 133: 2, 132: 1}.get(code, code)
    return False, _REFUSED.get(known, str(reason))


def _lost(reason) -> str | None:
    return None if _code(reason) == 0 else str(reason)
