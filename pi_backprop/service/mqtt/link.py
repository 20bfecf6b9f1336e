"""The service's link to an MQTT broker: events out, commands in, never in the loop's way.

paho's own thread keeps the connection (and reconnects with back-off); ``MqttLink``'s
publisher thread reads the service's events from a bounded ``Listener`` and publishes what
is due. While the broker is away nothing is queued: what falls due is dropped (and counted),
and the newest prediction and status go out again once it is back.
"""

import dataclasses
import logging
import ssl
import threading
import time
from collections.abc import Callable

from ...exc import PiBackpropError
from . import discovery, messages, paho

_log = logging.getLogger("pi_backprop.service.mqtt")

KINDS = ("prediction", "state", "metrics", "checkpoint", "rollback")
KEEPALIVE = 30              # seconds between pings: a dead connection is noticed within 1.5× this
RECONNECT = (1, 60)         # seconds: paho's back-off between reconnection tries, first and longest
MAX_QUEUED = 64             # messages paho may hold unsent (qos 1 on a slow link); more are dropped
STATE_GAP = 1.0             # seconds: a status message for a state change waits at least this long
OVERVIEW_SECONDS = 5.0      # how long a status message waits for the service's overview
FLAPPING_SECONDS = 10.0     # connections dropped this soon, twice in a row: another client's id?
CLOSE_SECONDS = 2.0         # what closing may wait for: the offline message, paho's thread


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``[mqtt]`` table made ready to use (a password, not its file)."""

    host: str
    port: int
    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None     # None: no TLS
    client_id: str
    topics: messages.Topics
    discovery_prefix: str
    device: discovery.Device
    qos: int
    commands: bool
    min_interval: Callable[[], float]      # live: read at each use
    status_interval: Callable[[], float]


def authenticate(client, settings: Settings) -> None:
    """Give a paho client the user name, password and TLS context of ``settings``."""
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.ssl_context is not None:
        client.tls_set_context(settings.ssl_context)


class MqttLink:
    """``start()`` connects in the background and returns at once; ``close()`` says offline
    and disconnects.

    commands : the service's ``Commands``; events : its ``EventBus``;
    overview : callable() -> the service's overview dict (it may raise; then none is sent)
    class_names : tuple of str
    """

    def __init__(self, settings: Settings, commands, events, overview: Callable[[], dict], class_names):
        self.settings, self.commands, self.events = settings, commands, events
        self._overview, self.class_names = overview, tuple(class_names)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.connected = False
        self.listening = threading.Event()   # set once the broker has acknowledged the subscriptions
        self._unacknowledged = 0
        self._condition = None     # what the log said last about the connection
        self._resend = False       # once connected: the newest prediction and status again
        self.dropped = 0           # messages that fell due while the broker was away
        self.published = 0
        self._listener = None
        self._thread = None
        self._client = None
        self._last_error = None    # of the last failed connection try
        self._connected_at = 0.0
        self._short_drops = 0      # connections in a row dropped within FLAPPING_SECONDS

    # -- the connection (paho's thread) -------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        client = paho.new_client(s.client_id, on_connect=self._connected, on_disconnect=self._disconnected,
                                 on_message=self._message, on_subscribe=self._subscribed)
        client.on_connect_fail = lambda *args: self._unreachable()
        # paho tells on_connect_fail nothing of why: keep the error of the last try.
        reconnect = client.reconnect

        def reconnect_keeping_the_error():
            try:
                return reconnect()
            except (OSError, ValueError) as error:
                self._last_error = error
                raise
        client.reconnect = reconnect_keeping_the_error
        client.will_set(s.topics.availability, "offline", qos=1, retain=True)
        authenticate(client, s)
        client.reconnect_delay_set(*RECONNECT)
        client.max_queued_messages_set(MAX_QUEUED)
        self._client = client
        self._listener = self.events.listen(KINDS)
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt publisher", daemon=True)
        self._thread.start()
        client.connect_async(s.host, s.port, keepalive=KEEPALIVE)
        client.loop_start()
        _log.info("mqtt: connecting to %s:%d as %s; topics under %s/", s.host, s.port, s.client_id, s.topics.base)

    def _say(self, condition: str, level: int, text: str, *args) -> None:
        """Log ``text`` once per change of the connection's condition."""
        with self._lock:
            if condition == self._condition:
                return
            self._condition = condition
        _log.log(level, "mqtt: " + text, *args)

    def _unreachable(self) -> None:
        s, error = self.settings, self._last_error
        why = (getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)) if error else None
        self._say(f"unreachable: {why}", logging.WARNING, "cannot reach the broker at %s:%d%s; trying again with "
                  "back-off", s.host, s.port, f" ({why})" if why else "")

    def _connected(self, ok: bool, why: str | None) -> None:
        s = self.settings
        if self._closing.is_set():
            return
        if not ok:
            hint = ("; check mqtt.username and mqtt.password_file" if why in ("bad user name or password",
                                                                               "not authorised") else "")
            self._say(f"refused: {why}", logging.ERROR, "the broker at %s:%d refused the connection: %s%s; "
                      "trying again with back-off", s.host, s.port, why, hint)
            return
        client = self._client
        topics = ([f"{s.discovery_prefix}/status"] if s.discovery_prefix else []) + \
            ([s.topics.command] if s.commands else [])
        with self._lock:
            self._unacknowledged = 1 if topics else 0
        if topics:
            client.subscribe([(topic, 1) for topic in topics])
        else:
            self.listening.set()
        client.publish(s.topics.availability, "online", qos=1, retain=True)
        self._publish_discovery()
        with self._lock:
            self.connected, self._resend = True, True
            dropped, self.dropped = self.dropped, 0
            self._connected_at = time.monotonic()
            flapping = self._condition == "flapping"
        if not flapping:    # said once; the next loss after a steady connection says more
            self._say("connected", logging.INFO, "connected to %s:%d%s", s.host, s.port,
                      f" ({dropped} messages dropped while it was away)" if dropped else "")

    def _subscribed(self) -> None:
        with self._lock:
            self._unacknowledged -= 1
            done = self._unacknowledged <= 0
        if done:
            self.listening.set()

    def _disconnected(self, why: str | None) -> None:
        s = self.settings
        self.listening.clear()
        with self._lock:
            was, self.connected = self.connected, False
            lasted = time.monotonic() - self._connected_at
        # After a refusal paho disconnects too: that is the refusal, said already.
        if not was or why is None or self._closing.is_set():
            return
        with self._lock:
            self._short_drops = self._short_drops + 1 if lasted < FLAPPING_SECONDS else 0
            flapping = self._short_drops >= 2
        if flapping:
            self._say("flapping", logging.WARNING, "connection to %s:%d dropped %.1f s after it was made (%s): "
                      "another client with client id %s? set mqtt.client_id; said once while it goes on",
                      s.host, s.port, lasted, why, s.client_id)
        else:
            self._say("lost", logging.WARNING, "connection to %s:%d lost (%s); reconnecting", s.host, s.port, why)

    def _publish_discovery(self) -> None:
        s = self.settings
        if not s.discovery_prefix:
            return
        for topic, payload in discovery.config_messages(s.discovery_prefix, s.topics, s.device, commands=s.commands):
            self._client.publish(topic, messages.encode(payload), qos=1, retain=True)

    def _message(self, topic: str, payload: bytes, retained: bool) -> None:
        s = self.settings
        if s.discovery_prefix and topic == f"{s.discovery_prefix}/status":
            if payload.strip() == b"online":      # Home Assistant (re)started: it forgot non-retained state
                _log.info("mqtt: Home Assistant is online; discovery sent again")
                self._publish_discovery()
                with self._lock:
                    self._resend = True
        elif s.commands and topic == s.topics.command:
            if retained:    # left on the broker long ago: obeyed again at every reconnect otherwise
                _log.warning("mqtt: a retained command on %s ignored (publish commands without retain)", topic)
                return
            self._command(payload)

    def _command(self, payload: bytes) -> None:
        try:
            name, args = messages.parse_command(payload)
            future = self.commands.submit(name, source="mqtt", **args)
        except PiBackpropError as error:
            _log.warning("mqtt: command refused: %s", error)
            self._result({"command": None, "ok": False, "error": str(error)})
            return
        _log.info("mqtt: command %s%s", name, f" {args}" if args else "")

        def done(finished):
            error = finished.exception()
            if error is None:
                self._result({"command": name, "ok": True, "result": _plain(finished.result())})
            else:
                self._result({"command": name, "ok": False, "error": str(error)})
        future.add_done_callback(done)

    def _result(self, payload: dict) -> None:
        if self.connected:
            self._client.publish(self.settings.topics.command_result, messages.encode(payload), qos=self.settings.qos)

    # -- events out (the publisher thread) -----------------------------------------------------

    def _publish_loop(self) -> None:
        failed = None
        while not self._closing.is_set():
            try:
                self._publish_until_closed()
            except Exception as error:   # noqa: BLE001 - the service goes on; the messages should too
                if str(error) != failed:
                    _log.exception("mqtt: publishing failed (%s); going on", error)
                failed = str(error)
                time.sleep(1.0)

    def _publish_until_closed(self) -> None:
        s = self.settings
        prediction = sent_prediction = None   # the newest prediction event's data; the one last published
        last_prediction = last_status = -1e9  # monotonic times of the last messages
        state, metrics, state_changed = None, {}, False
        while not self._closing.is_set():
            event = self._listener.get(timeout=0.2)
            if event is not None:
                if event.kind == "prediction":
                    prediction = event.data     # made into a message only when one is sent
                elif event.kind == "state":
                    state, state_changed = event.data["state"], True
                elif event.kind == "metrics":
                    metrics = event.data
                else:                         # checkpoint, rollback: the step moved
                    state_changed = True
            now = time.monotonic()
            with self._lock:
                connected, resend = self.connected, self._resend
                self._resend = False
            if resend:
                sent_prediction, last_status = None, -1e9
            fresh = prediction is not None and prediction is not sent_prediction
            if fresh and now - last_prediction >= s.min_interval():
                # At once for another label; the same label's new confidence at the status pace.
                if (sent_prediction is None or messages.label_of(prediction) != messages.label_of(sent_prediction)
                        or now - last_prediction >= s.status_interval()):
                    payload = messages.prediction_payload(prediction, self.class_names)
                    if self._send(connected, s.topics.prediction, payload):
                        sent_prediction = prediction
                    last_prediction = now
            if now - last_status >= s.status_interval() or (state_changed and now - last_status >= STATE_GAP):
                if self._send(connected, s.topics.status,
                              messages.status_payload(state, metrics, self._overview_or_none() if connected else None,
                                                      time.time())):
                    state_changed = False
                last_status = now

    def _send(self, connected: bool, topic: str, payload: dict) -> bool:
        if not connected:
            with self._lock:
                self.dropped += 1
            return False
        self._client.publish(topic, messages.encode(payload), qos=self.settings.qos, retain=True)
        self.published += 1
        return True

    def _overview_or_none(self) -> dict | None:
        try:
            return self._overview()
        except Exception as error:   # noqa: BLE001 - a busy or stopping service: a status without counts
            _log.debug("mqtt: no overview for the status (%s)", error)
            return None

    def close(self) -> None:
        """Say offline (retained), disconnect, end the threads."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        client = self._client
        if client is None:
            return
        if client.is_connected():
            info = client.publish(self.settings.topics.availability, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=CLOSE_SECONDS)
            except (RuntimeError, ValueError):   # not sent: the will says offline all the same
                pass
        client.disconnect()
        # paho's loop_stop waits for its thread without a limit (a TLS handshake with a silent
        # broker holds it for the keepalive): wait a little, then leave the daemon thread be.
        stopper = threading.Thread(target=client.loop_stop, name="mqtt stop", daemon=True)
        stopper.start()
        stopper.join(CLOSE_SECONDS)


def _plain(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
