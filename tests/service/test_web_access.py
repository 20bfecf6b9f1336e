"""Who may use the web page, probed from outside it as another site, a script or a stranger
on the network would: the token, its cookie, the same-origin rule, the Host check, body
caps, paths that are no files, and more pages than allowed. A real service on a real
socket (simulated sensor), a real token file."""

import json
import logging
import os
import socket
import stat

import pytest
from running_service import running, wait_for, write_config
from web_client import Page

from pi_backprop.service.web import access, api

pytest.importorskip("gpiozero")


def port_of(service):
    wait_for(lambda: service.web is not None, what="the web page")
    return service.web.port


def test_on_loopback_the_page_needs_no_token_and_says_what_it_is(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        page = Page(port_of(service))
        status, headers, body = page.get("/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b'<script src="/app.js"' in body
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        for path, kind in (("/app.js", "text/javascript"), ("/app.css", "text/css")):
            status, headers, _ = page.get(path)
            assert status == 200 and headers["content-type"].startswith(kind)
        status_json = page.get_json("/api/status")
        assert status_json["classes"] == list(service.definition.classes) and status_json["kind"] == "sensor"
    assert not (tmp_path / "state" / "web-token").exists()    # no token is made where none is needed


@pytest.mark.parametrize("path", ["/../../../etc/passwd", "/static/../access.py", "/%2e%2e/%2e%2e/etc/passwd",
                                  "/app.js/../../server.py", "/static/app.js", "//etc/passwd", "/api/../api.py",
                                  "/index.html", "/web-token", "/api/status/../../samples.db"])
def test_no_path_reaches_a_file_outside_the_shipped_ones(tmp_path, path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        status, _, body = Page(port_of(service)).get(path)
    assert status == 404, (path, status)
    assert b"root:" not in body and b"import" not in body and len(body) < 200


def test_a_host_name_other_than_loopback_is_refused_so_dns_rebinding_finds_nothing(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        port = port_of(service)
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}"):
            status, _, body = Page(port, host_header=host).get("/api/status")
            assert status == 421 and b"its own address" in body, host
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            assert Page(port, host_header=host).get("/api/status")[0] == 200, host


def test_a_post_from_another_site_changes_nothing(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        page = Page(port_of(service))
        wait_for(lambda: service.trainer.step > 0, what="training")
        for origin in ("http://evil.example", f"http://localhost:{service.web.port}.evil.example", "null"):
            status, _, body = page.post("/api/pause", origin=origin)
            assert status == 403 and b"from the page itself" in body, origin
            status, _, _ = page.post("/api/label", {"action": "start", "class": 0, "page": "x"}, origin=origin)
            assert status == 403
        assert not service.paused and not any(source.startswith("web") for source in service.labelling.held())
        status, _, body = page.post("/api/pause")             # the page's own POST
        assert status == 200 and json.loads(body)["result"] == "paused" and service.paused


def test_bodies_are_capped_and_must_be_json_objects(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        page = Page(port_of(service))
        same = {"Origin": f"http://127.0.0.1:{service.web.port}"}
        big = b'{"id": 1, "pad": "' + b"x" * 10_000 + b'"}'
        status, _, body = page.request("POST", "/api/samples/delete", raw=big, headers=same)
        assert status == 413 and b"4096 bytes" in body
        status, _, body = page.request("POST", "/api/pause", raw=b"", headers={**same, "Content-Length": "x"})
        assert status == 411
        for raw in (b"not json", b"[1, 2]", b"\xff\xfe"):
            status, _, body = page.request("POST", "/api/pause", raw=raw, headers=same)
            assert status == 400 and b"JSON object" in body, raw
        status, _, body = page.post("/api/samples/delete", {"id": -5})
        assert status == 400 and b"id must be a whole number" in body
        status, _, body = page.post("/api/label", {"action": "start", "class": "no such class", "page": "p1"})
        assert status == 400 and b"is not one of the classes" in body
        status, _, body = page.request("PUT", "/api/pause", raw=b"{}", headers=same)
        assert status == 405


def test_off_loopback_everything_needs_the_token_and_opening_its_address_sets_a_strict_cookie(tmp_path):
    config = write_config(tmp_path / "c.toml", web={"host": "0.0.0.0", "port": 0})
    with running(config, tmp_path / "state") as service:
        page = Page(port_of(service))
        token_file = tmp_path / "state" / "web-token"
        token = token_file.read_text().strip()
        assert len(token) == 32 and int(token, 16) >= 0
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        for path in ("/", "/app.js", "/api/status", "/api/frame?view=camera", "/api/window", "/api/events",
                     "/api/samples?class=0"):
            status, _, body = page.get(path)
            assert status == 401 and b"token" in body, path
        assert page.post("/api/pause")[0] == 401 and not service.paused
        wrong = "0" * 32
        assert page.get("/?token=" + wrong)[0] == 401
        assert page.get("/api/status", Cookie=f"{access.COOKIE}={wrong}")[0] == 401
        assert page.get("/api/status", Authorization=f"Bearer {wrong}")[0] == 401

        status, headers, _ = page.get("/?token=" + token)
        assert status == 303 and headers["location"] == "/"          # the token leaves the address bar
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"{access.COOKIE}={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert page.get("/", Cookie=f"{access.COOKIE}={token}")[0] == 200
        assert page.get("/api/status", Authorization=f"Bearer {token}")[0] == 200
        # The cookie is not enough for another site: the same-origin rule still holds.
        assert page.post("/api/pause", origin="http://evil.example", Cookie=f"{access.COOKIE}={token}")[0] == 403
        assert page.post("/api/pause", Cookie=f"{access.COOKIE}={token}")[0] == 200 and service.paused
        # A script without Origin shows the token itself.
        assert page.post("/api/resume", origin=None, Authorization=f"Bearer {token}")[0] == 200


def test_the_token_is_printed_once_as_the_whole_address_and_kept_across_restarts(tmp_path, caplog):
    config = write_config(tmp_path / "c.toml", web={"host": "0.0.0.0", "port": 0})
    with caplog.at_level(logging.INFO, logger="pi_backprop.service.web"):
        with running(config, tmp_path / "state") as service:
            port = port_of(service)
        first = (tmp_path / "state" / "web-token").read_text().strip()
        with running(config, tmp_path / "state") as service:
            port_of(service)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("web page: ")]
    assert len(lines) == 2 and f":{port}/?token={first}" in lines[0]
    assert (tmp_path / "state" / "web-token").read_text().strip() == first


def test_a_token_file_others_can_read_is_made_private_and_a_broken_one_replaced(tmp_path):
    path = tmp_path / "token"
    path.write_text("a" * 32 + "\n")
    os.chmod(path, 0o644)
    assert access.load_or_create_token(path) == "a" * 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("not a token\n")
    new = access.load_or_create_token(path)
    assert new != "a" * 32 and len(new) == 32 and access.read_token(path) == new
    assert access.write_token(path) != new          # rotating makes a new one


def test_more_pages_than_allowed_get_a_clear_refusal_and_a_closed_one_frees_its_place(tmp_path):
    with running(write_config(tmp_path / "c.toml"), tmp_path / "state") as service:
        port = port_of(service)
        streams = []
        for _ in range(api.MAX_STREAMS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(f"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert sock.recv(200).startswith(b"HTTP/1.0 200")
            streams.append(sock)
        status, _, body = Page(port).get("/api/events")
        assert status == 503 and f"{api.MAX_STREAMS} pages are open".encode() in body
        assert Page(port).get("/api/status")[0] == 200            # other requests are still served
        streams.pop().close()
        wait_for(lambda: _stream_starts(port), what="a place for a new page")
        for sock in streams:
            sock.close()


def _stream_starts(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        return sock.recv(200).startswith(b"HTTP/1.0 200")


def test_the_page_never_writes_markup_from_data():
    """Class names and every other string reach the page as text: the script builds elements
    and sets textContent, so a class named <img onerror=…> shows as those characters (the
    browser test shows it too)."""
    script = (api.importlib.resources.files("pi_backprop.service.web") / "static" / "app.js").read_text()
    for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert risky not in script, risky


def test_a_port_in_use_is_one_line_and_the_service_runs_on_without_the_page(tmp_path, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "c.toml", web={"port": port})
        with caplog.at_level(logging.ERROR), running(config, tmp_path / "state") as service:
            wait_for(lambda: service.trainer.step > 0, what="training without the page")
            assert service.web is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"port {port}" in errors[0] and "web.port" in errors[0] and "\n" not in errors[0]


def test_a_rotated_token_takes_over_at_once_and_the_old_cookie_stops_working(tmp_path, capsys):
    from pi_backprop.cli import main
    config = write_config(tmp_path / "c.toml", web={"host": "0.0.0.0", "port": 0})
    state = tmp_path / "state"
    with running(config, state) as service:
        page = Page(port_of(service))
        old = (state / "web-token").read_text().strip()
        assert page.get("/api/status", Cookie=f"{access.COOKIE}={old}")[0] == 200
        assert main(["web", "token", "--config", str(config), "--state-dir", str(state), "--rotate"]) == 0
        shown = capsys.readouterr().out.strip()
        new = (state / "web-token").read_text().strip()
        assert new != old and shown.endswith(f":{service.config.web.port}/?token={new}")
        assert page.get("/api/status", Cookie=f"{access.COOKIE}={old}")[0] == 401
        assert page.get("/api/status", Cookie=f"{access.COOKIE}={new}")[0] == 200
        assert main(["info", "--config", str(config), "--state-dir", str(state)]) == 0
        assert f"?token={new}" in capsys.readouterr().out


def test_an_unwritable_token_file_means_no_page_not_an_open_one(tmp_path, caplog):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("")
        token_file = blocker / "token"     # a file's child: not even root can make it
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        token_file = tmp_path / "ro" / "token"
    config = write_config(tmp_path / "c.toml", web={"host": "0.0.0.0", "port": 0, "token_file": str(token_file)})
    with caplog.at_level(logging.ERROR), running(config, tmp_path / "state") as service:
        wait_for(lambda: service.trainer.step > 0, what="training without the page")
        assert service.web is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "web page not served: cannot" in errors[0] and "web.token_file" in errors[0]
