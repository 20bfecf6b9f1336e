"""sd_notify client: datagrams read back from a real AF_UNIX socket set as NOTIFY_SOCKET."""

import os
import socket

import pytest

from pi_backprop.service.sdnotify import Notifier, watchdog_timeout


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket standing in for systemd; yields (path, receive())."""
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2.0)

    def receive():
        return server.recv(4096).decode()

    def pending():
        server.setblocking(False)
        try:
            return server.recv(4096).decode()
        except BlockingIOError:
            return None
        finally:
            server.settimeout(2.0)

    receive.pending = pending
    yield path, receive
    server.close()


@pytest.mark.parametrize("call, expected", [
    (lambda n: n.ready(), "READY=1"),
    (lambda n: n.ready("step 0"), "READY=1\nSTATUS=step 0"),
    (lambda n: n.status("step 3, loss 0.25"), "STATUS=step 3, loss 0.25"),
    (lambda n: n.status("two\nlines"), "STATUS=two lines"),
    (lambda n: n.watchdog(), "WATCHDOG=1"),
    (lambda n: n.stopping(), "STOPPING=1"),
    (lambda n: n.stopping("saving"), "STOPPING=1\nSTATUS=saving"),
    (lambda n: n.extend_timeout(2.5), "EXTEND_TIMEOUT_USEC=2500000"),
])
def test_messages_arrive_on_the_socket(notify_socket, call, expected):
    path, receive = notify_socket
    with Notifier(environ={"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert call(notifier) is True
        assert receive() == expected


def test_reloading_carries_a_monotonic_timestamp(notify_socket):
    path, receive = notify_socket
    with Notifier(environ={"NOTIFY_SOCKET": path}) as notifier:
        notifier.reloading()
    first, second = receive().split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=") and int(second.split("=")[1]) > 0


def test_environment_is_read_when_no_mapping_is_given(notify_socket, monkeypatch):
    path, receive = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with Notifier() as notifier:
        notifier.ready()
    assert receive() == "READY=1"


def test_abstract_namespace_address():
    name = f"pi-backprop-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2.0)
    try:
        with Notifier(environ={"NOTIFY_SOCKET": "@" + name}) as notifier:
            notifier.watchdog()
        assert server.recv(100) == b"WATCHDOG=1"
    finally:
        server.close()


def test_unchanged_status_is_not_resent(notify_socket):
    path, receive = notify_socket
    with Notifier(environ={"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.status("a") is True
        assert notifier.status("a") is False
        assert notifier.status("b") is True
    assert [receive(), receive()] == ["STATUS=a", "STATUS=b"]
    assert receive.pending() is None


@pytest.mark.parametrize("value", [None, "", "x", "relative/path", "vsock:2:1234"])
def test_no_usable_socket_is_a_no_op(value):
    environ = {} if value is None else {"NOTIFY_SOCKET": value}
    with Notifier(environ=environ) as notifier:
        assert not notifier.enabled
        assert notifier.ready() is False
        assert notifier.watchdog() is False


def test_a_vanished_socket_does_not_raise(tmp_path):
    with Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) as notifier:
        assert notifier.enabled
        assert notifier.ready() is False


def test_close_is_idempotent_and_silences(notify_socket):
    path, receive = notify_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": path})
    notifier.close()
    notifier.close()
    assert notifier.ready() is False
    assert receive.pending() is None


@pytest.mark.parametrize("environ, timeout", [
    ({}, None),
    ({"WATCHDOG_USEC": "20000000"}, 20.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 20.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"}, None),
])
def test_watchdog_timeout_and_interval(environ, timeout):
    assert watchdog_timeout(environ) == timeout
    with Notifier(environ=environ) as notifier:
        assert notifier.watchdog_interval == (None if timeout is None else timeout / 2)
