"""A small, stdlib-only client for systemd's service notification protocol (sd_notify(3)).

Without ``$NOTIFY_SOCKET`` (a terminal, ``nohup``, tests) every call is a no-op, so the
service loop calls it unconditionally::

    with Notifier() as notifier:
        ...                                   # open hardware, resume, warm kernels
        notifier.ready("step 0, 12 samples")
        while running:
            ...
            notifier.watchdog()               # at least every ``notifier.watchdog_interval`` s
            notifier.status("step 40, loss 0.31, accuracy 0.88, 120 samples")
        notifier.stopping()

A notification that cannot be delivered is logged at debug level and otherwise ignored:
telling systemd how we are doing must never be what stops the service.
"""

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def _socket_address(value):
    """``$NOTIFY_SOCKET`` as an address for ``socket.sendto``, or None if unusable."""
    if not value or len(value) < 2:
        return None
    if value[0] == "@":
        # Abstract namespace: the leading '@' stands for a NUL byte.
        return "\0" + value[1:]
    if value[0] == "/":
        return value
    # e.g. "vsock:..." (systemd 254+, for VMs): not something a Pi service is given.
    return None


def watchdog_timeout(environ=None) -> float | None:
    """systemd's watchdog timeout for this process in seconds, or None when none is set.

    ``$WATCHDOG_USEC`` is in microseconds; ``$WATCHDOG_PID``, when set, names the process
    the watchdog is meant for (a child that inherited the environment must not ping).
    """
    environ = os.environ if environ is None else environ
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


class Notifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` etc. to systemd.

    ``address`` defaults to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
    namespace); ``environ`` (default ``os.environ``) is where the address and watchdog
    variables are read from. A context manager; ``close()`` is idempotent.
    """

    def __init__(self, address: str | None = None, *, environ=None):
        environ = os.environ if environ is None else environ
        raw = address if address is not None else environ.get("NOTIFY_SOCKET")
        self._address = _socket_address(raw)
        if raw and self._address is None:
            log.warning("ignoring NOTIFY_SOCKET=%r: not a path or @abstract name", raw)
        self._socket = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        timeout = watchdog_timeout(environ)
        #: Seconds between watchdog pings (half of systemd's timeout), or None.
        self.watchdog_interval: float | None = None if timeout is None else timeout / 2
        self._last_status = None

    @property
    def enabled(self) -> bool:
        """True when notifications go somewhere (``$NOTIFY_SOCKET`` was set and usable)."""
        return self._socket is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``"KEY=value"`` strings) as one datagram; True if it was sent."""
        if self._socket is None:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            self._socket.sendto(message, self._address)
        except OSError as error:
            log.debug("sd_notify %r not delivered: %s", fields, error)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete: the service now does its job."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
            self._last_status = status
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """A one-line, human-readable state for ``systemctl status``; unchanged text is not resent."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.notify(_status_field(text))

    def watchdog(self) -> bool:
        """Tell systemd's watchdog the service is alive (call at least every ``watchdog_interval`` s)."""
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """The configuration is being reloaded; call ``ready()`` when done."""
        # MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match the reload request;
        # older systemd ignores the field.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        """The service has begun shutting down."""
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before a start or stop timeout is declared."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        target = "disabled" if self._address is None else repr(self._address.replace("\0", "@", 1))
        return f"<Notifier {target} watchdog_interval={self.watchdog_interval}>"


def _status_field(text: str) -> str:
    # A newline would start a new KEY=value field.
    return "STATUS=" + " ".join(str(text).splitlines())
