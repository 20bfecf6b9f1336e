"""The HTTP server of the page: the standard library's, one thread per connection, in the
service's process. Every request passes ``access`` first; what it may then do is in
``api``. The service loop never waits for it: commands go through ``Commands``, events come
from a bounded ``Listener`` per open page, frames from the ``LiveView``.
"""

import http.server
import logging
import threading
from urllib.parse import parse_qs, urlsplit

from .access import COOKIE, Access
from .api import Api, Reply

_log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16     # requests served at once; beyond that a quick 503
MAX_BODY = 4096          # bytes of a POST body (a label, an id)
SOCKET_SECONDS = 10.0    # a client that neither sends nor reads for this long is dropped


class WebServer:
    """``start()`` listens and serves in a thread; ``close()`` stops it (open streams end
    within a second). ``OSError`` from the constructor when the port cannot be had."""

    def __init__(self, api: Api, access: Access):
        self.api, self.access = api, access
        self.closing = threading.Event()
        self._httpd = _Server((access.host, access.port), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="web", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.closing.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 32

    def __init__(self, address, handler, web: WebServer):
        self.web = web
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        if ":" in address[0]:
            import socket
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                b"Connection: close\r\n\r\ntoo many requests at once; try again\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "pi-backprop"
    sys_version = ""
    timeout = SOCKET_SECONDS

    def log_message(self, format, *args):   # noqa: A002 - the base class's name
        _log.debug("web %s: " + format, self.client_address[0], *args)

    def do_GET(self):
        self._serve_safely("GET")

    def do_POST(self):
        self._serve_safely("POST")

    def _serve_safely(self, method: str) -> None:
        try:
            self._serve(method)
        except Exception:   # noqa: BLE001 - a bug in one request must not go unseen, nor end the server
            _log.exception("web request %s %s failed", method, self.path)
            self._send(Reply.error(500, "the service failed to answer this; its journal says why"))

    def do_PUT(self):
        self._send(Reply.error(405, "only GET and POST are served"))

    do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_PUT

    def _serve(self, method: str) -> None:
        web: WebServer = self.server.web
        access: Access = web.access
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        host = self.headers.get("Host")
        if not access.host_allowed(host):
            return self._send(Reply.error(421, "this server answers to its own address only "
                                               f"(http://127.0.0.1:{access.port}/)"))
        if method == "GET" and url.path == "/" and "token" in query:
            return self._open_with_token(access, query["token"])
        bearer = self._bearer()
        if not access.authorised(self._cookie(), bearer):
            return self._send(Reply.error(401, "this page needs its token: open the address that "
                                               "'pi-backprop web token' shows"))
        if method == "POST":
            if not access.same_origin(self.headers.get("Origin"), host):
                return self._send(Reply.error(403, "a change must come from the page itself (another "
                                                   "site's request was refused)"))
            body = self._body()
            if isinstance(body, Reply):
                return self._send(body)
            reply = web.api.post(url.path, body)
        elif url.path == "/api/events":
            return web.api.stream(self._stream_writer(), query, web.closing)
        else:
            reply = web.api.get(url.path, query)
        self._send(reply)

    def _open_with_token(self, access: Access, given: str) -> None:
        if access.token_path is None:
            return self._send(Reply.redirect("/"))
        if not access.token_matches(given):
            return self._send(Reply.error(401, "that token is not this page's (it may have been rotated): "
                                               "'pi-backprop web token' shows the address"))
        # The cookie carries the token from now on, so it leaves the address bar.
        cookie = f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/; Max-Age=31536000"
        self._send(Reply.redirect("/", cookie=cookie))

    def _cookie(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value
        return None

    def _bearer(self) -> str | None:
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def _body(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return Reply.error(411, "a POST needs a Content-Length")
        if int(length) > MAX_BODY:
            return Reply.error(413, f"the body is over {MAX_BODY} bytes")
        return self.rfile.read(int(length))

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:   # the client went away: nothing to tell it
            pass

    def _stream_writer(self):
        """``write(bytes_or_None)``: the first call sends the stream's headers (None: refuse,
        with the reply given as ``write.refuse(reply)``); False once the client is gone."""
        handler = self

        class Writer:
            started = False

            def refuse(self, reply: Reply) -> None:
                handler._send(reply)

            def __call__(self, data: bytes) -> bool:
                try:
                    if not self.started:
                        handler.send_response(200)
                        handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
                        handler.send_header("Cache-Control", "no-store")
                        handler.send_header("X-Accel-Buffering", "no")
                        handler.end_headers()
                        self.started = True
                    handler.wfile.write(data)
                    handler.wfile.flush()
                    return True
                except OSError:
                    return False
        return Writer()
