"""What the page (or a script) may ask and tell: JSON under ``/api/``, one event stream, the
live pictures, and the shipped static files. The README's "The web page" lists every path.

Answers come from the service's seams only: questions and changes go through ``Commands``
(the loop answers between training bursts), the stream reads a bounded ``Listener`` of its
events, the pictures the ``LiveView``. No path names a file: the static files are a fixed
table read from the package.
"""

import base64
import concurrent.futures
import dataclasses
import importlib.resources
import json
import math
import re
import threading
import time
from collections.abc import Callable

import numpy as np

from ...exc import CommandError, PiBackpropError, ServiceBusy
from . import images

COMMAND_SECONDS = 10.0     # how long a request waits for the loop's answer
HOLD_SECONDS = 2.0         # a tile's label lasts this long unless the page renews it (it does, twice a second)
MAX_STREAMS = 4            # event streams (open pages) at once
STREAM_QUEUE = 256         # events a slow page may fall behind by (then the oldest go)
PICTURES_KEPT = 8          # encoded pictures kept (both views): several pages share one encoding
HEARTBEAT_SECONDS = 10.0   # a comment line this often, so proxies and the page see the stream is alive
PAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}
# The page's own files only: no inline script, no other site (a class name cannot run code).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclasses.dataclass
class Reply:
    """One HTTP answer."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    extra: tuple = ()

    def headers(self):
        yield "Content-Type", self.content_type
        yield "Content-Length", str(len(self.body))
        yield "Cache-Control", "no-store"
        yield "X-Content-Type-Options", "nosniff"
        yield "Referrer-Policy", "no-referrer"
        yield "X-Frame-Options", "DENY"
        if self.content_type.startswith("text/html"):
            yield "Content-Security-Policy", CSP
        yield from self.extra

    @classmethod
    def json(cls, data, status: int = 200) -> "Reply":
        return cls(status, json.dumps(plain(data), separators=(",", ":")).encode(), "application/json")

    @classmethod
    def error(cls, status: int, message: str) -> "Reply":
        return cls(status, (message + "\n").encode())

    @classmethod
    def redirect(cls, location: str, cookie: str | None = None) -> "Reply":
        extra = (("Location", location),) + ((("Set-Cookie", cookie),) if cookie else ())
        return cls(303, b"", extra=extra)


@dataclasses.dataclass
class Backend:
    """The service as the page sees it.

    commands, events : the service's ``Commands`` and ``EventBus``
    live             : its ``LiveView``; state : a ``PageState`` subscribed to its events
    class_names      : the model's classes; kind : "image" or "sensor"
    fps, label_mode  : callables giving the live settings ``web.fps`` and ``labels.mode``
    """

    commands: object
    events: object
    live: object
    state: object
    class_names: tuple
    kind: str
    fps: Callable[[], float]
    label_mode: Callable[[], str]


class Api:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._pictures_lock = threading.Lock()
        self._pictures = {}   # (view, capture number) -> (bytes, content type): encoded once per capture
        self._static = {path: (_read_static(name), kind) for path, (name, kind) in STATIC.items()}

    # -- GET --------------------------------------------------------------------------------

    def get(self, path: str, query: dict) -> Reply:
        if path in self._static:
            body, kind = self._static[path]
            return Reply(200, body, kind)
        routes = {"/api/status": self._status, "/api/overview": self._overview, "/api/history": self._history,
                  "/api/samples": self._samples, "/api/frame": self._frame, "/api/window": self._window}
        route = routes.get(path)
        if route is None:
            return Reply.error(404, f"no such page: {path}")
        return _answered(lambda: route(query))

    def _status(self, query) -> Reply:
        return Reply.json({"now": self.backend.state.snapshot(), "classes": list(self.backend.class_names),
                           "kind": self.backend.kind, "fps": self.backend.fps(),
                           "label_mode": self.backend.label_mode(), "hold_seconds": HOLD_SECONDS})

    def _overview(self, query) -> Reply:
        answer = self._ask("overview")
        return Reply.json(dict(answer, fps=self.backend.fps(), label_mode=self.backend.label_mode()))

    def _history(self, query) -> Reply:
        rows = self._ask("history")
        return Reply.json([dataclasses.asdict(row) for row in rows])

    def _samples(self, query) -> Reply:
        label = self._label(query.get("class"))
        limit = _whole(query.get("limit", "12"), "limit")
        listed = self._ask("samples", label=label, limit=limit)
        return Reply.json([{"id": sample_id, "time": when, **self._thumbnail(x)} for sample_id, when, x in listed])

    def _thumbnail(self, x: np.ndarray) -> dict:
        if x.ndim == 3:
            data = images.png(images.model_input_pixels(x))
            return {"image": "data:image/png;base64," + base64.b64encode(data).decode()}
        return {"values": np.round(np.asarray(x, np.float64), 4).tolist()}

    def _frame(self, query) -> Reply:
        """The newest camera frame or model input, or (``capture=N``) those of capture N while
        it is among the last few: the page asks for the input of the frame it shows."""
        view = query.get("view", "camera")
        if view not in ("camera", "input"):
            return Reply.error(400, f"view must be camera or input, got {view!r}")
        if "capture" in query:
            number = _whole(query["capture"], "capture")
            capture = self.backend.live.find(number)
            if capture is None:
                return Reply.error(404, f"capture {number} is gone: ask without capture= for the newest")
        else:
            capture = self.backend.live.newest()
            if capture is None:
                return Reply.error(404, "no frame yet")
        if capture.x.ndim != 3 or (view == "camera" and capture.frame is None):
            return Reply.error(404, "this source gives no pictures: ask /api/window")
        key = (view, capture.number)
        with self._pictures_lock:
            cached = self._pictures.get(key)
        if cached is None:
            pixels = capture.frame if view == "camera" else images.model_input_pixels(capture.x)
            cached = images.encode(pixels, jpeg=view == "camera")   # the model's input stays exact
            with self._pictures_lock:
                self._pictures[key] = cached
                while len(self._pictures) > PICTURES_KEPT:
                    del self._pictures[next(iter(self._pictures))]   # the oldest first
        body, kind = cached
        return Reply(200, body, kind, extra=(("X-Capture", str(capture.number)),))

    def _window(self, query) -> Reply:
        capture = self.backend.live.newest()
        if capture is None:
            return Reply.error(404, "no capture yet")
        x = np.asarray(capture.x, np.float64)
        if x.ndim != 1:
            return Reply.error(404, "this source gives images: ask /api/frame")
        return Reply.json({"number": capture.number, "time": capture.time, "values": np.round(x, 5).tolist()})

    # -- POST -------------------------------------------------------------------------------

    def post(self, path: str, raw: bytes) -> Reply:
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            return Reply.error(400, "the body must be a JSON object")
        if not isinstance(body, dict):
            return Reply.error(400, "the body must be a JSON object")
        routes = {"/api/label": self._label_post, "/api/samples/delete": self._delete,
                  "/api/classes/clear": self._clear, "/api/pause": self._simple("pause"),
                  "/api/resume": self._simple("resume"), "/api/checkpoint": self._simple("checkpoint"),
                  "/api/rollback": self._roll_back}
        route = routes.get(path)
        if route is None:
            return Reply.error(404, f"no such command: {path}")
        return _answered(lambda: route(body))

    def _label_post(self, body) -> Reply:
        action, page = body.get("action"), body.get("page", "")
        if not isinstance(page, str) or not PAGE_ID.fullmatch(page):
            raise CommandError("page must be 1 to 32 letters, digits, - or _ (the page's own id)")
        source = f"web {page}"
        if action == "stop":
            return Reply.json({"held": self._ask("label_stop", source=source)})
        label = self._label(body.get("class"))
        if action == "start":
            self._ask("label_start", source=source, label=label, seconds=HOLD_SECONDS)
        elif action == "next":
            self._ask("label_next", source=source, label=label)
        else:
            raise CommandError(f"action must be start, stop or next, got {action!r}")
        return Reply.json({"label": label, "class": self.backend.class_names[label]})

    def _delete(self, body) -> Reply:
        return Reply.json({"deleted": self._ask("delete_sample", id=body.get("id"))})

    def _clear(self, body) -> Reply:
        return Reply.json({"deleted": self._ask("clear_class", label=self._label(body.get("class")))})

    def _roll_back(self, body) -> Reply:
        return Reply.json({"step": self._ask("roll_back", step=body.get("step"))})

    def _simple(self, name):
        return lambda body: Reply.json({"result": self._ask(name)})

    # -- the event stream -------------------------------------------------------------------

    def stream(self, write, query: dict, closing: threading.Event) -> None:
        """Server-sent events until the page goes away or the server closes: every event as
        ``event: <kind>`` with ``data:`` its JSON, predictions at most ``fps`` a second (the
        newest one wins)."""
        if not self._streams.acquire(blocking=False):
            write.refuse(Reply.error(503, f"{MAX_STREAMS} pages are open already; close one and reload"))
            return
        try:
            with self.backend.events.listen(maxsize=STREAM_QUEUE) as inbox:
                if not write(b"retry: 2000\n\n"):
                    return
                self._pump(write, inbox, closing)
        finally:
            self._streams.release()

    def _pump(self, write, inbox, closing) -> None:
        last_sent = last_prediction = -math.inf
        waiting = None   # the newest prediction not sent yet
        while not closing.is_set():
            gap = 1.0 / self.backend.fps()
            event = inbox.get(timeout=min(gap, 1.0))
            now, out = time.monotonic(), []
            if event is not None:
                if event.kind == "prediction":
                    waiting = event
                else:
                    out.append(event)
            if waiting is not None and now - last_prediction >= gap:
                out.append(waiting)
                waiting, last_prediction = None, now
            if out or now - last_sent >= HEARTBEAT_SECONDS:
                if not write(b"".join(_event_bytes(e) for e in out) or b": alive\n\n"):
                    return
                last_sent = now

    # -- helpers ----------------------------------------------------------------------------

    def _ask(self, name: str, *, source: str = "web", **args):
        future = self.backend.commands.submit(name, source=source, **args)
        try:
            return future.result(timeout=COMMAND_SECONDS)
        except concurrent.futures.TimeoutError:
            raise ServiceBusy(f"{name}: the service did not answer within {COMMAND_SECONDS:g} s; try again") from None

    def _label(self, value) -> int:
        if value is None:
            raise CommandError("say which class: class (its name or index)")
        if isinstance(value, str) and value.isdigit() and value not in self.backend.class_names:
            value = int(value)
        return self.backend.commands.class_index(value)


def _answered(route) -> Reply:
    """The route's reply, or its failure as a one-line error."""
    try:
        return route()
    except ServiceBusy as error:
        return Reply.error(503, str(error))
    except PiBackpropError as error:
        return Reply.error(400, str(error))


def _whole(text: str, name: str) -> int:
    if not text.isdigit():
        raise CommandError(f"{name} must be a whole number, got {text!r}")
    return int(text)


def _event_bytes(event) -> bytes:
    data = json.dumps(plain(event.as_dict()), separators=(",", ":"))
    return f"id: {event.number}\nevent: {event.kind}\ndata: {data}\n\n".encode()


def plain(value):
    """``value`` with numpy numbers as Python ones and NaN or infinity as None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_static(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()
