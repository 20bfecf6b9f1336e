"""MQTT with Home Assistant's discovery: one more client of the service's command/event
interface (``pip install 'pi-backprop[mqtt]'``, or Debian's ``python3-paho-mqtt``).

    link = mqtt.start(service)       # None when [mqtt] is off or cannot start (said in one line)
    ...
    link.close()

``messages`` (topics, payloads, commands), ``discovery`` (Home Assistant's config messages),
``link`` (the connection and the publisher), ``paho`` (paho-mqtt 1.6 and 2.x alike).
"""

import logging
import os
import ssl
import stat
from pathlib import Path

from ...exc import ConfigError
from .discovery import Device
from .link import OVERVIEW_SECONDS, MqttLink, Settings
from .messages import Topics, checked_topic, device_id, hostname_word

_log = logging.getLogger("pi_backprop.service.mqtt")


GENERIC_HOSTNAMES = {"raspberrypi", "localhost", "pi"}   # what many Pis are called out of the box


def settings_from(config, model_name: str, version: str, current=None) -> Settings:
    """The ``[mqtt]`` table of ``config`` ready to use; ConfigError (one line) when a value,
    the password file or the CA file will not do. ``current``: callable() -> the config in
    force now (the live keys are read from it; default ``config``)."""
    m = config.mqtt
    current = current or (lambda: config)
    host = hostname_word()
    base = checked_topic(m.base_topic or f"pi-backprop/{host}", "mqtt.base_topic")
    if not m.base_topic and host in GENERIC_HOSTNAMES:
        _log.warning("mqtt: this machine is called %r, as many Pis are: two of them would share the topics "
                     "under %s/; give it a name of its own (sudo raspi-config) or set mqtt.base_topic", host, base)
    prefix = checked_topic(m.discovery_prefix, "mqtt.discovery_prefix") if m.discovery_prefix else ""
    if m.ca_file and not m.tls:
        raise ConfigError("mqtt.ca_file is set but mqtt.tls is false: set tls = true (or ca_file = \"\"); "
                          "without it the connection would not be encrypted")
    password = read_password(Path(m.password_file)) if m.password_file else None
    if password is not None and not m.username:
        raise ConfigError("mqtt.password_file is set but mqtt.username is not: set both, or neither")
    identity = device_id(base)
    return Settings(host=m.host, port=m.port or (8883 if m.tls else 1883), username=m.username or None,
                    password=password, ssl_context=tls_context(m.ca_file) if m.tls else None,
                    # the device id keeps two Pis of one name from taking each other's connection
                    client_id=m.client_id or f"pi-backprop-{host}-{identity[-6:]}", topics=Topics.under(base),
                    discovery_prefix=prefix, device=Device(identity, f"pi-backprop {host}", model_name, version),
                    qos=m.qos, commands=m.commands, min_interval=lambda: current().mqtt.min_interval,
                    status_interval=lambda: current().mqtt.status_interval)


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A client context that checks the broker's certificate and host name against
    ``ca_file`` ("" = the system's CAs); ConfigError when the file will not do."""
    if ca_file and not os.access(ca_file, os.R_OK):
        raise ConfigError(f"mqtt.ca_file {ca_file} cannot be read: give a readable PEM file, or \"\" for "
                          "the system's CAs")
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (ssl.SSLError, OSError, ValueError) as error:
        raise ConfigError(f"mqtt.ca_file {ca_file} holds no usable CA certificate ({error}): give a PEM file"
                          ) from None


def read_password(path: Path) -> str:
    """The first line of ``path``; ConfigError when it cannot be read. Warns when others may read it."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"mqtt.password_file {path} cannot be read ({getattr(error, 'strerror', error)}): "
                          "put the broker's password on its first line, readable by the service") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warning("mqtt: %s may be read by others (mode %o): chmod 600 it", path, stat.S_IMODE(mode))
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"mqtt.password_file {path} is empty: put the password on its first line")
    return lines[0]


def start(service) -> MqttLink | None:
    """Connect ``service`` (a ``loop.Service`` that has opened its parts) to its broker."""
    config = service.config
    if not config.mqtt.enabled:
        return None
    from ... import __version__
    from .paho import import_paho

    try:
        import_paho()
        settings = settings_from(config, service.definition.name, __version__, current=lambda: service.config)
    except ConfigError as error:
        _log.error("mqtt not started: %s; the service runs on without it", error)
        return None

    def overview():
        return service.commands.submit("overview", source="mqtt").result(OVERVIEW_SECONDS)
    link = MqttLink(settings, service.commands, service.events, overview, service.definition.classes)
    try:
        link.start()
    except Exception as error:   # noqa: BLE001 - whatever paho makes of it, the service runs on
        _log.error("mqtt not started: %s; the service runs on without it", error)
        link.close()
        return None
    return link
