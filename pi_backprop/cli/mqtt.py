"""``pi-backprop mqtt forget``: remove this service's device from Home Assistant (empty
retained discovery messages) and clear its retained state messages on the broker: after
uninstalling, or before moving the Pi to another broker or base topic.

``pi-backprop mqtt status``: what the service would connect to, and whether it can."""

import argparse
import threading
import time

from .. import __version__
from ..exc import ConfigError, HardwareError
from ..service import mqtt
from ..service.mqtt import discovery, paho
from ..service.mqtt.link import authenticate
from .web import add_service_arguments, service_config

EXAMPLES = """examples:
  pi-backprop mqtt status                        the broker, topics and device id; can it connect?
  sudo pi-backprop mqtt forget --config /etc/pi-backprop/config.toml
"""
CONNECT_SECONDS = 10.0


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("what", choices=("status", "forget"),
                        help="status: where it publishes and whether the broker answers; forget: remove the "
                             "Home Assistant device and the retained messages")
    parser.add_argument("--if-enabled", action="store_true",
                        help="do nothing (and say so) when mqtt.enabled is false (the uninstaller uses it)")
    add_service_arguments(parser)


def _connected_client(settings):
    """A paho client connected to the broker (its loop running), or a one-line error."""
    outcome, answered = {}, threading.Event()

    def on_connect(ok, why):
        outcome.update(ok=ok, why=why)
        answered.set()
    client = paho.new_client(f"{settings.client_id}-cli", on_connect=on_connect, on_disconnect=lambda why: None,
                             on_message=lambda topic, payload, retained: None)
    authenticate(client, settings)
    where = f"{settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except (OSError, ValueError) as error:
        raise HardwareError(f"cannot reach the MQTT broker at {where} ({getattr(error, 'strerror', None) or error}); "
                            "check mqtt.host and mqtt.port") from None
    client.loop_start()
    if not answered.wait(CONNECT_SECONDS):
        client.loop_stop()
        raise HardwareError(f"the MQTT broker at {where} did not answer within {CONNECT_SECONDS:g} s")
    if not outcome["ok"]:
        client.loop_stop()
        raise HardwareError(f"the MQTT broker at {where} refused the connection: {outcome['why']}; "
                            "check mqtt.username and mqtt.password_file")
    return client


def run(args) -> int:
    config = service_config(args)
    if args.if_enabled and not config.mqtt.enabled:
        print("mqtt.enabled = false: nothing to do")
        return 0
    paho.import_paho()
    settings = mqtt.settings_from(config, config.model.name, __version__)
    topics = settings.topics
    if args.what == "status":
        print(f"broker: {settings.host}:{settings.port}{' (TLS)' if settings.ssl_context else ''}, "
              f"client id {settings.client_id}, paho-mqtt {paho.version()}")
        print(f"topics: {topics.availability}, {topics.prediction}, {topics.status}"
              + (f", commands on {topics.command}" if settings.commands else " (commands off)"))
        print("Home Assistant: " + (f"device {settings.device.id} under {settings.discovery_prefix}/"
                                      if settings.discovery_prefix else "no discovery (mqtt.discovery_prefix = \"\")"))
        if not config.mqtt.enabled:
            print("mqtt.enabled = false: the service does not connect")
        client = _connected_client(settings)
        client.disconnect()
        client.loop_stop()
        print("the broker accepts the connection")
        return 0
    if not settings.discovery_prefix:
        raise ConfigError("mqtt.discovery_prefix is \"\": set it to the prefix the device was announced under")
    client = _connected_client(settings)
    cleared = discovery.removal_topics(settings.discovery_prefix, topics, settings.device)
    cleared += [topics.prediction, topics.status, topics.availability]
    sent = [client.publish(topic, b"", qos=1, retain=True) for topic in cleared]
    deadline = time.monotonic() + CONNECT_SECONDS
    while not all(info.is_published() for info in sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    unsent = sum(not info.is_published() for info in sent)
    client.disconnect()
    client.loop_stop()
    if unsent:
        raise HardwareError(f"the MQTT broker at {settings.host}:{settings.port} did not take {unsent} of the "
                            f"{len(sent)} removals within {CONNECT_SECONDS:g} s; run it again")
    print(f"removed device {settings.device.id} ({settings.device.name}) from Home Assistant under "
          f"{settings.discovery_prefix}/ and cleared the retained messages under {topics.base}/ "
          f"on {settings.host}:{settings.port} (a running service announces itself again: stop it first)")
    return 0
