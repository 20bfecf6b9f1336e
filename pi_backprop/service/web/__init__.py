"""The web page the service serves: one more client of its command/event interface.

    server = web.start(service)      # None when [web] is off or the port cannot be had
    ...
    server.close()

``access`` (token, cookie, same origin), ``api`` (what may be asked), ``server`` (HTTP),
``state`` (what the page shows at once), ``images`` (PNG/JPEG), ``static/`` (the page).
"""

import errno
import logging
import socket
from pathlib import Path

from ...exc import ConfigError
from .access import Access, is_loopback, load_or_create_token
from .api import Api, Backend
from .server import WebServer
from .state import CURRENT, PageState

_log = logging.getLogger(__name__)

TOKEN_NAME = "web-token"


def token_path(config, state_dir: Path) -> Path:
    """Where the page's token is kept: ``web.token_file``, or web-token in the state directory."""
    return Path(config.web.token_file) if config.web.token_file else Path(state_dir) / TOKEN_NAME


def start(service) -> WebServer | None:
    """Serve the page for ``service`` (a ``loop.Service`` that has opened its parts)."""
    config = service.config
    if not config.web.enabled:
        return None
    host, port = config.web.host, config.web.port
    path = None if is_loopback(host) else token_path(config, service.state_dir)
    try:
        if path is not None:
            load_or_create_token(path)
    except ConfigError as error:   # no token, no page: never an open one
        _log.error("web page not served: %s; the service runs on without it", error)
        return None
    access = Access(host, port, path)
    state = PageState()
    service.events.subscribe(state.on_event, CURRENT)
    definition = service.definition
    backend = Backend(service.commands, service.events, service.live, state, tuple(definition.classes),
                      "image" if len(definition.input_shape) == 3 else "sensor",
                      fps=lambda: service.config.web.fps, label_mode=lambda: service.config.labels.mode)
    try:
        server = WebServer(Api(backend), access)
    except OSError as error:
        service.events.unsubscribe(state.on_event)
        why = "is in use by another program" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        _log.error("web page not served: port %d on %s %s; set web.port to a free one (or web.enabled = false); "
                   "the service runs on without it", port, host, why)
        return None
    access.port = port = server.port   # the one had, when any free one was asked for
    server.start()
    if access.token is None:
        _log.info("web page: %s (this machine only; from another: ssh -L %d:127.0.0.1:%d %s, then open "
                  "http://127.0.0.1:%d/)", access.url("127.0.0.1" if host != "::1" else host), port, port,
                  socket.gethostname(), port)
    else:
        shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
        _log.info("web page: %s (the token is also in %s; 'pi-backprop web token --rotate' makes a new one)",
                  access.url(shown), token_path(config, service.state_dir))
    return server
