"""A real Mosquitto broker for the tests (Debian's ``mosquitto``), on a free loopback port with
a generated config, and a subscriber that records what it hears, as Home Assistant would.

    with Broker(tmp_path, users={"pi": "secret"}) as broker:   # users: password required
        with Subscriber(broker, "#") as heard: ...
"""

import contextlib
import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
DEADLINE = 30.0


def require_mosquitto():
    if not Path(MOSQUITTO).exists() or not Path(MOSQUITTO_PASSWD).exists():
        pytest.skip("the MQTT tests need Debian's Mosquitto broker (sudo apt-get install mosquitto)",
                    allow_module_level=True)
    pytest.importorskip("paho.mqtt.client", reason="the MQTT tests need paho-mqtt (pip install 'pi-backprop[mqtt]')")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_ca(folder: Path, names: str = "DNS:localhost, IP:127.0.0.1") -> dict:
    """A throwaway CA and a server certificate for ``names`` (openssl's subjectAltName)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key")}
    run = lambda *args: subprocess.run([OPENSSL, *args], check=True, capture_output=True)   # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pi-backprop test CA",
        "-keyout", str(files["ca-key"]), "-out", str(files["ca"]))
    request = folder / "server.csr"
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(files["server-key"]),
        "-out", str(request))
    extensions = folder / "san.cnf"
    extensions.write_text(f"subjectAltName = {names}\n")
    run("x509", "-req", "-in", str(request), "-CA", str(files["ca"]), "-CAkey", str(files["ca-key"]),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(files["server"]))
    return files


class Broker:
    """``mosquitto -c <generated config>``; ``stop()`` (SIGTERM), ``kill()``, ``start()`` again
    on the same port. ``users``: {name: password}, then anonymous clients are refused."""

    def __init__(self, folder: Path, users: dict | None = None, tls: dict | None = None):
        self.folder, self.users, self.tls = Path(folder), users or {}, tls
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = None
        lines = [f"listener {self.port} 127.0.0.1", "persistence false",
                 f"log_dest file {self.folder / 'mosquitto.log'}", "log_type all",
                 f"allow_anonymous {'false' if self.users else 'true'}",
                 # Started as root, Mosquitto would become user "mosquitto", who cannot read tmp_path.
                 f"user {getpass.getuser()}"]
        if self.users:
            passwords = self.folder / "passwd"
            for index, (name, password) in enumerate(self.users.items()):
                subprocess.run([MOSQUITTO_PASSWD, "-b", *(["-c"] if index == 0 else []), str(passwords), name,
                                password], check=True, capture_output=True)
            lines.append(f"password_file {passwords}")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['server']}", f"keyfile {tls['server-key']}"]
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self):
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto did not start: {self.process.stderr.read().decode()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen in time")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=DEADLINE)

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()


class Subscriber:
    """A paho client subscribed to ``topics``, recording every message: ``messages`` is a
    list of (topic, payload bytes, retained flag); ``arrivals`` their monotonic times."""

    def __init__(self, broker: Broker, *topics, username=None, password=None):
        from paho.mqtt import client as mqtt

        api = getattr(mqtt, "CallbackAPIVersion", None)
        kwargs = {"callback_api_version": api.VERSION2} if api is not None else {}
        self.client = mqtt.Client(client_id=f"test-subscriber-{free_port()}", **kwargs)
        if username:
            self.client.username_pw_set(username, password)
        self.messages, self.arrivals, self._lock, self._ready = [], [], threading.Lock(), threading.Event()
        self.client.on_message = self._got
        self.client.on_subscribe = lambda *args: self._ready.set()
        self.broker, self.topics = broker, topics

    def _got(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))
            self.arrivals.append(time.monotonic())

    def __enter__(self):
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.subscribe([(topic, 1) for topic in self.topics])
        self.client.loop_start()
        if not self._ready.wait(DEADLINE):
            raise RuntimeError("the subscriber was not subscribed in time")
        return self

    def __exit__(self, *exc):
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic) -> list:
        """The payloads heard on ``topic``, oldest first."""
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def times_on(self, topic) -> list:
        """When the messages on ``topic`` arrived (monotonic seconds)."""
        with self._lock:
            return [when for (t, _, _), when in zip(self.messages, self.arrivals) if t == topic]

    def json_on(self, topic) -> list:
        return [json.loads(p) for p in self.on(topic) if p]

    def last(self, topic):
        heard = self.on(topic)
        return heard[-1] if heard else None

    def publish(self, topic, payload, retain=False):
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(DEADLINE)


def retained(broker: Broker, topic: str, timeout: float = 2.0):
    """The retained message on ``topic`` as a new subscriber gets it (None: nothing retained)."""
    with Subscriber(broker, topic) as fresh:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with fresh._lock:
                kept = [payload for t, payload, retain in fresh.messages if t == topic and retain]
            if kept:
                return kept[-1]
            time.sleep(0.02)
    return None
